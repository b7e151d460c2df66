package filelock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// openAt opens name in the lock directory, never through a symbolic link,
// and only if it is a regular file.
func (d *fileDriver) openAt(name string, flags int) (*os.File, error) {
	path := filepath.Join(d.dir, name)
	fd, err := unix.Openat(int(d.dirf.Fd()), name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("filelock: %s is a symbolic link: lock files are never opened through one", path)
	}
	if err != nil {
		return nil, fmt.Errorf("filelock: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("filelock: %w", &os.PathError{Op: "fstat", Path: path, Err: err})
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("filelock: %s is not a regular file (mode %o)", path, st.Mode)
	}
	return f, nil
}

// sameFile reports whether f is still the file called name in the lock
// directory, and the directory still the one at d.dir: what a process
// opening the lock afresh would find.
func (d *fileDriver) sameFile(f *os.File, name string) (bool, error) {
	same, err := d.fileAt(f, name)
	if err != nil || !same {
		return same, err
	}
	return d.dirAt()
}

// fileAt reports whether f is the file called name in the lock directory.
func (d *fileDriver) fileAt(f *os.File, name string) (bool, error) {
	var fst, pst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		return false, err
	}
	switch err := unix.Fstatat(int(d.dirf.Fd()), name, &pst, unix.AT_SYMLINK_NOFOLLOW); {
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case err != nil:
		return false, err
	}
	return fst.Dev == pst.Dev && fst.Ino == pst.Ino, nil
}

// dirAt reports whether the lock directory is still the one at its path.
func (d *fileDriver) dirAt() (bool, error) {
	var dst, pst unix.Stat_t
	if err := unix.Fstat(int(d.dirf.Fd()), &dst); err != nil {
		return false, err
	}
	switch err := unix.Stat(d.dir, &pst); {
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		return false, nil
	case err != nil:
		return false, err
	}
	return dst.Dev == pst.Dev && dst.Ino == pst.Ino, nil
}
