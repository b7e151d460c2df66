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

	"github.com/dlockio/dlock/driver"
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
// (sameID notices the swap).
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
		return -1, driver.InvalidArgument("filelock: lock directory", dir, "a directory")
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
	// untrusted says what of path (dir or its parent) is wrong: got, want.
	untrusted := func(path, what string, got any, want string) error {
		arg := "filelock: default lock directory " + dir
		if path != dir {
			arg += ": its parent " + path
		}
		return driver.InvalidArgument(arg+": "+what, got, want+
			"; else another user could remove or replace its lock files: "+
			"fix or remove it, or name a lock directory of your own (file:///dir)")
	}

	// The parent decides who can rename our directory away and put theirs
	// in its place.
	parent := filepath.Dir(dir)
	var st unix.Stat_t
	if err := unix.Stat(parent, &st); err != nil {
		return -1, fmt.Errorf("filelock: default lock directory %s: %w", dir, &os.PathError{Op: "stat", Path: parent, Err: err})
	}
	if st.Uid != 0 && int(st.Uid) != euid {
		return -1, untrusted(parent, "owner", fmt.Sprintf("uid %d", st.Uid), fmt.Sprintf("root or uid %d (the effective user)", euid))
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return -1, untrusted(parent, "mode", fmt.Sprintf("%04o", st.Mode&0o7777), "not writable by group or others, or sticky (as /tmp is)")
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
			return -1, untrusted(dir, "type", "symbolic link", "a directory")
		}
		return -1, untrusted(dir, "type", "not a directory", "a directory")
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
		err = untrusted(dir, "owner", fmt.Sprintf("uid %d", st.Uid), fmt.Sprintf("uid %d (the effective user)", euid))
	case st.Mode&0o022 != 0:
		err = untrusted(dir, "mode", fmt.Sprintf("%04o", st.Mode&0o7777), "not writable by group or others (0700)")
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
		return driver.InvalidArgument("filelock: lock directory "+dir+": file system", name+", a network file system",
			"a local one: flock(2) on a network file system does not exclude as it does on a local disk or tmpfs; "+
				"use a local directory (file:///run/lock/NAME, /dev/shm, or the default file://)")
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
