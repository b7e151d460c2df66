package filelock

// Dir returns the directory the driver keeps its lock files in: the one
// given to New or in the file:// URL, or DefaultDir. It lets a program keep
// its own files next to the locks (`dlock demo` keeps its counter there).
func (d *fileDriver) Dir() string { return d.dir }
