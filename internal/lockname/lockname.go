// Package lockname turns lock names of any bytes into names an engine can
// store, the same way for every driver.
//
// Escape keeps the bytes [A-Za-z0-9_-] and writes every other byte as %XX
// (upper-case hex). That is a bijection, and its output never holds '/',
// '.', '{', '}', '~', white space or NUL, so it is safe
// as an etcd key segment (no name's range holds another's: "a" and "a/b"),
// a ZooKeeper node name, a file name (never "." or "..", never hidden) and a
// Redis Cluster hash tag (no braces). An engine with a length limit passes
// it as max: a name whose escaped form is longer becomes "~" followed by the
// hex SHA-256 of the name (65 bytes); '~' never appears in the escaped form,
// so the two forms cannot collide, and two names that hash alike are as
// likely as a SHA-256 collision.
//
// Limits used by the drivers: ZooKeeper and file names 200 bytes (znode
// and file-name limits leave room for the drivers' own prefixes and
// suffixes); Redis and etcd none (keys may be megabytes long).
package lockname

import (
	"crypto/sha256"
	"encoding/hex"
)

const hexDigits = "0123456789ABCDEF"

// Escape returns the engine name of name; max > 0 bounds its length as
// described in the package doc (max must be at least 65).
func Escape(name string, max int) string {
	n := 0
	for i := 0; i < len(name); i++ {
		if plain(name[i]) {
			n++
		} else {
			n += 3
		}
	}
	if max > 0 && n > max {
		sum := sha256.Sum256([]byte(name))
		return "~" + hex.EncodeToString(sum[:])
	}
	if n == len(name) {
		return name
	}
	b := make([]byte, 0, n)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if plain(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
		}
	}
	return string(b)
}

func plain(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// Unescape returns the name whose engine name is s. It reports false for
// a hashed name (the "~" form: the name itself is not kept) and for a
// string Escape cannot have made.
func Unescape(s string) (string, bool) {
	if s == "" || s[0] == '~' {
		return "", false
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case plain(c):
			b = append(b, c)
		case c == '%' && i+2 < len(s) && upperHex(s[i+1]) && upperHex(s[i+2]):
			v := unhex(s[i+1])<<4 | unhex(s[i+2])
			if plain(v) {
				return "", false // Escape keeps plain bytes as they are
			}
			b = append(b, v)
			i += 2
		default:
			return "", false
		}
	}
	return string(b), true
}

func upperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}
