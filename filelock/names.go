package filelock

import "github.com/dlockio/dlock/internal/lockname"

// maxName bounds the escaped lock name in a file name (lockname hashes
// longer ones): with ".lock" it stays well below NAME_MAX, 255 bytes.
const maxName = 200

// fileName is the name of the lock file of the lock called name: the name
// escaped by lockname, then ".lock". The escaped form holds no '/', '.' or
// NUL, so a lock file is never ".", "..", hidden or the tokens file.
func fileName(name string) string { return lockname.Escape(name, maxName) + ".lock" }
