package filelock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// fileID is what tells two files apart: an open file keeps it for life, so
// a file's is read once, when it is opened.
type fileID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) fileID { return fileID{uint64(st.Dev), uint64(st.Ino)} }

// openAt opens name in the lock directory, never through a symbolic link,
// and only if it is a regular file.
func (d *fileDriver) openAt(name string, flags int) (*os.File, error) {
	f, _, err := d.openAtID(name, flags)
	return f, err
}

// openAtID is openAt, and tells the file's ID.
func (d *fileDriver) openAtID(name string, flags int) (*os.File, fileID, error) {
	path := filepath.Join(d.dir, name)
	fd, err := unix.Openat(int(d.dirf.Fd()), name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.ELOOP) {
		return nil, fileID{}, fmt.Errorf("filelock: %s is a symbolic link: lock files are never opened through one", path)
	}
	if err != nil {
		return nil, fileID{}, fmt.Errorf("filelock: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fileID{}, fmt.Errorf("filelock: %w", &os.PathError{Op: "fstat", Path: path, Err: err})
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fileID{}, fmt.Errorf("filelock: %s is not a regular file (mode %o)", path, st.Mode)
	}
	return os.NewFile(uintptr(fd), path), idOf(&st), nil
}

// sameID reports whether the file with ID id is still the one called name
// in the lock directory, and the directory still the one at d.dir: what a
// process opening the lock afresh would find. It looks up the path
// d.dir/name, one system call.
func (d *fileDriver) sameID(id fileID, name string) (bool, error) {
	var pst unix.Stat_t
	switch err := unix.Fstatat(unix.AT_FDCWD, d.dir+"/"+name, &pst, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && idOf(&pst) == id:
		return true, nil
	case err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR):
		return false, err
	}
	return false, nil
}

// fileAt reports whether f is the file called name in the lock directory.
func (d *fileDriver) fileAt(f *os.File, name string) (bool, error) {
	id, err := statID(f)
	if err != nil {
		return false, err
	}
	return d.idAt(id, name)
}

// idAt reports whether the file with ID id is the one called name in the
// lock directory.
func (d *fileDriver) idAt(id fileID, name string) (bool, error) {
	var pst unix.Stat_t
	switch err := unix.Fstatat(int(d.dirf.Fd()), name, &pst, unix.AT_SYMLINK_NOFOLLOW); {
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case err != nil:
		return false, err
	}
	return idOf(&pst) == id, nil
}

func statID(f *os.File) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileID{}, err
	}
	return idOf(&st), nil
}

// dirAt reports whether the lock directory is still the one at its path.
func (d *fileDriver) dirAt() (bool, error) {
	var pst unix.Stat_t
	switch err := unix.Stat(d.dir, &pst); {
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		return false, nil
	case err != nil:
		return false, err
	}
	return idOf(&pst) == d.dirID, nil
}
