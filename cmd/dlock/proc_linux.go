package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/filelock"
)

// groupAlive reports whether any process of the process group pgid is left
// (zombies not yet reaped count, as they do for the kernel).
func groupAlive(pgid int) bool {
	err := syscall.Kill(-pgid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// signalGroup sends sig to the process group pgid; a group that has gone is
// not an error.
func signalGroup(pgid int, sig syscall.Signal) { _ = syscall.Kill(-pgid, sig) }

// controllingTTY returns dlock's controlling terminal, or nil if it has
// none (cron, systemd, ssh without -t), and whether dlock is in its
// foreground process group: only then may the command take it (a dlock
// started with & leaves it to the shell).
func controllingTTY() (*os.File, bool) {
	f, err := os.OpenFile("/dev/tty", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, false
	}
	pg, err := foreground(f)
	if err != nil {
		f.Close()
		return nil, false
	}
	return f, pg == syscall.Getpgrp()
}

func foreground(tty *os.File) (int, error) { return unix.IoctlGetInt(int(tty.Fd()), unix.TIOCGPGRP) }

// setForeground makes pgid the terminal's foreground process group. A
// background process may do that only with SIGTTOU blocked (or it is
// stopped): the signal is blocked on this thread for the call.
func setForeground(tty *os.File, pgid int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var block, old unix.Sigset_t
	block.Val[(syscall.SIGTTOU-1)/64] |= 1 << ((syscall.SIGTTOU - 1) % 64)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &block, &old); err != nil {
		return err
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	return unix.IoctlSetPointerInt(int(tty.Fd()), unix.TIOCSPGRP, pgid)
}

// guardScript is run by /bin/sh in a process group of its own, with a pipe
// from dlock on stdin. dlock writes the command's process group, then "done"
// once that group has ended. If the pipe ends without "done", dlock died
// (SIGKILL, the OOM killer, a crash): the guard kills the whole group, which
// the parent-death signal alone cannot do (it reaches the command's first
// process only), and waits until the group has gone (5 s at most: zombies
// nobody reaps). For file:// its fd 3 is the held lock file, so the lock
// stays held until then. It ignores the signals a terminal or a kill of
// dlock's own group would send it.
const guardScript = `trap '' HUP INT QUIT TERM TSTP TTIN TTOU USR1 USR2 ALRM PIPE WINCH
read pgid || exit 0
read word || :
[ "$word" = done ] && exit 0
kill -s KILL -- "-$pgid" 2>/dev/null
i=0
while [ $i -lt 500 ] && kill -s 0 -- "-$pgid" 2>/dev/null; do sleep 0.01; i=$((i+1)); done`

// guard is the helper process that kills the command's group if dlock dies.
type guard struct {
	cmd   *exec.Cmd
	w     *os.File
	armed bool
}

// startGuard starts the guard; lockFile, if not nil, is a descriptor of the
// held lock file for the guard to keep open.
func startGuard(lockFile *os.File) (*guard, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", guardScript)
	cmd.Stdin = r
	if lockFile != nil {
		cmd.ExtraFiles = []*os.File{lockFile}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, err
	}
	return &guard{cmd: cmd, w: w}, nil
}

// arm tells the guard which group to kill should dlock die.
func (g *guard) arm(pgid int) error {
	_, err := io.WriteString(g.w, strconv.Itoa(pgid)+"\n")
	g.armed = err == nil
	return err
}

// disarm tells the guard the group has ended (or never started), and waits
// for it to exit.
func (g *guard) disarm() error {
	var werr error
	if g.armed {
		_, werr = io.WriteString(g.w, "done\n")
	}
	g.w.Close()
	err := g.cmd.Wait()
	if werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("guard: %v", err)
	}
	return nil
}

// heldLockFile returns a new descriptor of the file that carries the
// lease's flock(2) (file://), or nil for another engine or an ended lease. A
// lock of this kind belongs to the open file, not to the process: while the
// guard keeps a copy of the descriptor, the lock survives dlock's death until
// the guard has killed the command's group.
func heldLockFile(l *dlock.Lease) *os.File {
	f, ok := filelock.HeldFile(l)
	if !ok {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	dup, derr := -1, error(nil)
	// Control keeps the descriptor open while it runs: a release of the
	// lock (on a loss) cannot close it, nor its number be reused, under the
	// dup. If it was closed already, there is nothing to keep.
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		return nil
	}
	return os.NewFile(uintptr(dup), f.Name())
}

// becomeSubreaper makes dlock the reaper of its command's orphans
// (PR_SET_CHILD_SUBREAPER): a process of the command's group whose parent
// has exited becomes dlock's child, not PID 1's, so that its zombie is
// reaped by reapGroup. Otherwise it waits for PID 1, which in a container
// may reap late (this sandbox's: about 2 s) or never (an entry point that
// does not wait), and the zombie keeps the group alive for the kernel
// (kill(-pgid, 0) succeeds): dlock would hold the lock, and not exit, for
// that long. Process-wide and never undone: dlock runs one command.
func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// reapGroup reaps the exited children of dlock in process group pgid: when
// dlock is PID 1 (a container's entry point) or a subreaper (becomeSubreaper), the command's
// orphans become its children, and their zombies would keep the group alive.
func reapGroup(pgid int) {
	for {
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_PGID, pgid, &info, unix.WEXITED|unix.WNOHANG, nil); err != nil {
			return // ECHILD: none
		}
		if info.Signo == 0 {
			return // children left, none exited (the kernel filled in nothing)
		}
	}
}
