package etcdlock

import "strings"

// namePrefix is the key range of one lock name. The escaping never produces
// '/', so no name's range contains another name's keys ("a" vs "a/b").
func (d *Driver) namePrefix(name string) string { return d.root + escape(name) + "/" }

// escape keeps unreserved URL characters and percent-encodes every other byte.
func escape(name string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}
