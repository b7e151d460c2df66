package filelock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
)

// DefaultDir is the directory used when none is given: $XDG_RUNTIME_DIR/dlock,
// or dlock-EUID in the temp dir ($TMPDIR, else /tmp).
//
// Before using it, New and Open check that nobody else can change it: it must
// be a directory, not a symbolic link, owned by the effective user and not
// writable by group or others, in a parent owned by root or that user and,
// if group- or world-writable, sticky (as /tmp is). A missing directory is
// made with mode 0700.
func DefaultDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "dlock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("dlock-%d", os.Geteuid()))
}

// openDir opens the lock directory once. Lock files are then opened relative
// to it, so that a directory swapped in at the same path later is never used
// (sameFile notices the swap).
func openDir(dir string, isDefault bool) (*os.File, error) {
	var (
		fd  int
		err error
	)
	if isDefault {
		fd, err = openDefaultDir(dir)
	} else {
		fd, err = openGivenDir(dir)
	}
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), dir)
	if err := checkLocalFS(fd, dir); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openGivenDir opens a directory named in the URL or given to New. Its
// owner and mode are the caller's choice: whoever can write to it can break
// its locks, as the package doc says.
func openGivenDir(dir string) (int, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return -1, fmt.Errorf("filelock: lock directory: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOTDIR) {
		return -1, fmt.Errorf("%w: lock directory %s is not a directory", dlock.ErrInvalidArgument, dir)
	}
	if err != nil {
		return -1, fmt.Errorf("filelock: lock directory %s: %w", dir, err)
	}
	return fd, nil
}

// openDefaultDir makes or opens the default directory, refusing one that
// another user could have made or could change.
func openDefaultDir(dir string) (int, error) {
	euid := os.Geteuid()
	untrusted := func(path, format string, args ...any) error {
		what := "default lock directory " + dir
		if path != dir {
			what += ": its parent " + path
		}
		return fmt.Errorf("%w: %s %s: another user could remove or replace its lock files; "+
			"fix or remove it, or name a lock directory of your own (file:///dir)",
			dlock.ErrInvalidArgument, what, fmt.Sprintf(format, args...))
	}

	// The parent decides who can rename our directory away and put theirs
	// in its place.
	parent := filepath.Dir(dir)
	var st unix.Stat_t
	if err := unix.Stat(parent, &st); err != nil {
		return -1, fmt.Errorf("filelock: default lock directory %s: %w", dir, &os.PathError{Op: "stat", Path: parent, Err: err})
	}
	if st.Uid != 0 && int(st.Uid) != euid {
		return -1, untrusted(parent, "is owned by uid %d, want root or uid %d (the effective user)", st.Uid, euid)
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return -1, untrusted(parent, "is writable by group or others (mode %04o) and not sticky", st.Mode&0o7777)
	}

	// Make it, or find it; then judge what we opened, not what a path
	// pointed to a moment earlier.
	if err := unix.Mkdir(dir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("filelock: default lock directory: %w", &os.PathError{Op: "mkdir", Path: dir, Err: err})
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		var lst unix.Stat_t
		if unix.Lstat(dir, &lst) == nil && lst.Mode&unix.S_IFMT == unix.S_IFLNK {
			return -1, untrusted(dir, "is a symbolic link, want a directory")
		}
		return -1, untrusted(dir, "is not a directory")
	}
	if err != nil {
		return -1, fmt.Errorf("filelock: default lock directory: %w", &os.PathError{Op: "open", Path: dir, Err: err})
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("filelock: default lock directory: %w", &os.PathError{Op: "fstat", Path: dir, Err: err})
	}
	switch {
	case int(st.Uid) != euid:
		err = untrusted(dir, "is owned by uid %d, want uid %d (the effective user)", st.Uid, euid)
	case st.Mode&0o022 != 0:
		err = untrusted(dir, "is writable by group or others (mode %04o), want 0700", st.Mode&0o7777)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// checkLocalFS refuses a directory on a network file system. There flock(2)
// is emulated with byte-range locks held per process (NFS, SMB), or covers
// only this client, so that two hosts, or two clients in one process, could
// both hold a lock; and inotify sees no other host's changes.
func checkLocalFS(fd int, dir string) error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return fmt.Errorf("filelock: lock directory: %w", &os.PathError{Op: "statfs", Path: dir, Err: err})
	}
	subtype := ""
	if sfs.Type == unix.FUSE_SUPER_MAGIC {
		subtype = fuseSubtype(fd)
	}
	if name := networkFS(int64(sfs.Type), subtype); name != "" {
		return fmt.Errorf("%w: lock directory %s is on %s, a network file system: flock(2) there does not exclude "+
			"as it does on a local disk or tmpfs; use a local directory (file:///run/lock/NAME, /dev/shm, or the default file://)",
			dlock.ErrInvalidArgument, dir, name)
	}
	return nil
}

// networkFS names the network file system with statfs magic fsType (and,
// for FUSE, the mount's subtype), or returns "" for a local one. FUSE is
// local unless its subtype is a known network one: fuse-overlayfs, the root
// file system of rootless containers, locks like a local disk.
func networkFS(fsType int64, fuseSubtype string) string {
	switch fsType {
	case unix.NFS_SUPER_MAGIC:
		return "NFS"
	case unix.SMB_SUPER_MAGIC, unix.CIFS_SUPER_MAGIC, unix.SMB2_SUPER_MAGIC:
		return "SMB/CIFS"
	case unix.V9FS_MAGIC:
		return "9p"
	case unix.AFS_SUPER_MAGIC, unix.AFS_FS_MAGIC:
		return "AFS"
	case unix.CEPH_SUPER_MAGIC:
		return "CephFS"
	case unix.CODA_SUPER_MAGIC:
		return "Coda"
	case unix.NCP_SUPER_MAGIC:
		return "NCP"
	case unix.FUSE_SUPER_MAGIC:
		switch fuseSubtype {
		case "sshfs", "rclone", "s3fs", "gcsfuse", "glusterfs", "ceph-fuse", "juicefs", "goofys",
			"blobfuse", "blobfuse2", "mount-s3", "davfs", "cifs", "smbnetfs", "nfs":
			return "FUSE (" + fuseSubtype + ")"
		}
	}
	return ""
}

// fuseSubtype returns the subtype of the FUSE mount holding fd ("sshfs" for
// "fuse.sshfs" in /proc/self/mountinfo), or "" if it cannot tell.
func fuseSubtype(fd int) string {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil || stx.Mask&unix.STATX_MNT_ID == 0 {
		return ""
	}
	fstype := mountFSType(stx.Mnt_id)
	if len(fstype) > len("fuse.") && fstype[:len("fuse.")] == "fuse." {
		return fstype[len("fuse."):]
	}
	return ""
}

// mountFSType returns the file system type of the mount with the given ID,
// from /proc/self/mountinfo, or "".
func mountFSType(id uint64) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	want := strconv.FormatUint(id, 10)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		line := sc.Bytes()
		f := bytes.Fields(line)
		if len(f) == 0 || string(f[0]) != want {
			continue
		}
		for i, x := range f {
			if string(x) == "-" && i+1 < len(f) {
				return string(f[i+1])
			}
		}
	}
	return ""
}
