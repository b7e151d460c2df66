package filelock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
)

// TestNetworkFUSERefused mounts a real FUSE file system that calls itself
// sshfs (fstype fuse.sshfs, served by a minimal FUSE server in this test)
// and opens a lock directory on it: refused, naming the file system. The
// same mount called fuse.local is accepted. This is the one network file
// system type the test machine can mount; the others (NFS, SMB, 9p) are
// told by statfs magic alone (TestNetworkFS).
func TestNetworkFUSERefused(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		subtype string
		refused bool
	}{
		{"sshfs", true},
		{"local", false},
	} {
		t.Run(tc.subtype, func(t *testing.T) {
			dir := t.TempDir()
			if err := mountFUSE(t, dir, tc.subtype); err != nil {
				t.Skipf("cannot mount FUSE here: %v", err)
			}
			d, err := open(dir)
			if err == nil {
				d.Close()
			}
			switch {
			case tc.refused && (err == nil || !errors.Is(err, dlock.ErrInvalidArgument) || !strings.Contains(err.Error(), "FUSE (sshfs)")):
				t.Errorf("open of a directory on fuse.sshfs = %v; want ErrInvalidArgument naming FUSE (sshfs)", err)
			case !tc.refused && err != nil:
				t.Errorf("open of a directory on fuse.%s: %v", tc.subtype, err)
			default:
				t.Logf("fuse.%s: %v", tc.subtype, err)
			}
		})
	}
}

// mountFUSE mounts at dir a FUSE file system of type fuse.SUBTYPE whose
// root is an empty directory, served until the test ends.
func mountFUSE(t *testing.T, dir, subtype string) error {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)
	if err := unix.Mount("test", dir, "fuse."+subtype, unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		unix.Close(fd)
		return err
	}
	// Served from after the mount: before it the device reads EPERM. The
	// kernel's INIT request waits in its queue.
	dev := os.NewFile(uintptr(fd), "/dev/fuse") // in the poller: Close ends a Read
	done := make(chan struct{})
	go serveFUSE(dev, done)
	// Should a request go unanswered, closing the device aborts the
	// connection and fails it, instead of hanging the test.
	watchdog := time.AfterFunc(30*time.Second, func() { dev.Close() })
	t.Cleanup(func() {
		watchdog.Stop()
		unix.Unmount(dir, unix.MNT_DETACH)
		dev.Close()
		<-done
	})
	return nil
}

// FUSE protocol, the little of it the kernel needs to mount, stat, open and
// statfs an empty root directory (include/uapi/linux/fuse.h).
const (
	fuseGetattr    = 3
	fuseStatfs     = 17
	fuseInit       = 26
	fuseOpendir    = 27
	fuseReleasedir = 29
	fuseInHeader   = 40
)

// serveFUSE answers requests on dev until it is closed.
func serveFUSE(dev *os.File, done chan struct{}) {
	defer close(done)
	buf := make([]byte, 1<<17)
	le := binary.LittleEndian
	for {
		n, err := dev.Read(buf)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINTR) {
				continue // an interrupted request
			}
			return
		}
		if n < fuseInHeader {
			continue
		}
		opcode, unique := le.Uint32(buf[4:]), le.Uint64(buf[8:])
		var out []byte
		errno := int32(0)
		switch opcode {
		case fuseInit:
			out = make([]byte, 64)
			le.PutUint32(out[0:], 7)      // major
			le.PutUint32(out[4:], 31)     // minor
			le.PutUint32(out[8:], 0)      // max_readahead
			le.PutUint16(out[16:], 1)     // max_background
			le.PutUint16(out[18:], 1)     // congestion_threshold
			le.PutUint32(out[20:], 1<<16) // max_write
			le.PutUint32(out[24:], 1)     // time_gran
		case fuseGetattr:
			out = make([]byte, 104)
			le.PutUint64(out[0:], 3600)        // attr_valid
			le.PutUint64(out[16:], 1)          // ino
			le.PutUint32(out[16+60:], 0o40700) // mode
			le.PutUint32(out[16+64:], 2)       // nlink
			le.PutUint32(out[16+80:], 4096)    // blksize
		case fuseOpendir:
			out = make([]byte, 16)
		case fuseStatfs:
			out = make([]byte, 80)
			le.PutUint64(out[0:], 1024)  // blocks
			le.PutUint32(out[40:], 4096) // bsize
			le.PutUint32(out[44:], 255)  // namelen
			le.PutUint32(out[48:], 4096) // frsize
		case fuseReleasedir:
		default:
			errno = -int32(unix.ENOSYS)
		}
		reply := make([]byte, 16+len(out))
		le.PutUint32(reply[0:], uint32(len(reply)))
		le.PutUint32(reply[4:], uint32(errno))
		le.PutUint64(reply[8:], unique)
		copy(reply[16:], out)
		dev.Write(reply)
	}
}
