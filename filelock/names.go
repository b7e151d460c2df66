package filelock

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// fileName encodes any bytes as a file name: readable names stay readable,
// everything else is escaped, and long names are hashed. The prefixes keep
// the two forms from colliding.
func fileName(name string) string {
	var b strings.Builder
	b.WriteString("n-")
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' && i > 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	if b.Len() > 200 {
		sum := sha256.Sum256([]byte(name))
		return "h-" + hex.EncodeToString(sum[:]) + ".lock"
	}
	return b.String() + ".lock"
}
