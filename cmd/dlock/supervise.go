package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
)

const (
	// groupPoll is how often dlock looks for the command's process group to
	// have ended once its first process has exited: the kernel has no event
	// for the last member of a group leaving.
	groupPoll = 20 * time.Millisecond
	// killWait bounds the wait for the group to disappear after SIGKILL
	// (a process in uninterruptible sleep dies only when its I/O ends).
	killWait = 2 * time.Second
	// outputLinger bounds the copying of a command's output to a writer that
	// is not a file (tests) after the group has ended: a process that left
	// the group may hold the pipe.
	outputLinger = time.Second
)

// commandRunning is set while `dlock run` supervises a command; main stops
// dlock on SIGTSTP only when it is not (the supervisor handles job control).
var commandRunning atomic.Bool

// supervisor runs one command under a lease. Its loop owns every field.
type supervisor struct {
	client *dlock.Client
	lease  *dlock.Lease
	ttl    time.Duration
	grace  time.Duration
	stderr io.Writer
	// sigs relays the signals dlock receives (nil in tests, which call Run
	// in-process: then no terminal is taken and dlock never stops itself).
	sigs <-chan os.Signal

	pgid int      // the command's process group (its first process's pid)
	tty  *os.File // dlock's controlling terminal, lent to the command when dlock has it; or nil
	lent bool     // the command's group was given the terminal at its start

	lostErr   error            // why the lock is considered lost, once it is
	killTimer *time.Timer      // SIGKILL after --grace, once lost
	giveUp    <-chan time.Time // stop waiting for the group, after SIGKILL
}

// childEvent is a state change of the command's first process.
type childEvent struct {
	ws  syscall.WaitStatus
	err error
}

// supervise runs argv while lease is held and returns once the command's
// process group has ended (or was killed after a loss). It returns the
// command's exit code, why the lock was lost if it was (then the group was
// terminated), or an error for a command that could not start.
func supervise(ctx context.Context, c *dlock.Client, lease *dlock.Lease, o runOpts, argv []string, stdout, stderr io.Writer) (code int, lost error, err error) {
	path, err := lookPath(argv[0])
	if err != nil {
		return 0, nil, err
	}
	env := append(withoutDlockVars(os.Environ()),
		"DLOCK_TOKEN="+fmt.Sprint(lease.Token()),
		"DLOCK_NAME="+lease.Name())

	stdout, stderr = serialized(stdout, stderr)
	s := &supervisor{client: c, lease: lease, ttl: o.ttl, grace: o.grace, stderr: stderr, sigs: signalsFrom(ctx)}
	outF, outCopy, err := childOutput(stdout)
	if err != nil {
		return 0, nil, exitf(exitFailure, "cannot run %q: %v", argv[0], err)
	}
	errF, errCopy, err := childOutput(stderr)
	if err != nil {
		outCopy.started(outF)
		outCopy.abort()
		return 0, nil, exitf(exitFailure, "cannot run %q: %v", argv[0], err)
	}
	// A group of its own lets a loss stop the whole tree (sh -c 'a | b'),
	// not just its first process; the parent-death signal and the guard
	// make it die with dlock. With the terminal in dlock's hands, the group
	// gets it: it can read it, and Ctrl-C, Ctrl-\ and Ctrl-Z reach it.
	sys := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if s.sigs != nil {
		var fg bool
		if s.tty, fg = controllingTTY(); fg {
			sys.Foreground, sys.Ctty = true, int(s.tty.Fd())
			s.lent = true
		}
	}
	g, gerr := startGuard(o.lockFile)
	if gerr != nil {
		fmt.Fprintf(stderr, "dlock: warning: no guard process (%v): if dlock is killed, only the command's first process dies with it\n", gerr)
	}
	commandRunning.Store(true)
	defer commandRunning.Store(false)
	if err := becomeSubreaper(); err != nil {
		fmt.Fprintf(stderr, "dlock: warning: cannot become the reaper of the command's orphans (%v): dlock waits for whoever reaps them\n", err)
	}

	// With a guard, the command starts behind a gate (gateScript) that
	// opens once the guard knows its group: a dlock killed before that
	// leaves nothing running. Without one (no /bin/sh: warned above) it
	// starts directly, as the gate would not make it safer.
	var gateR, gateW *os.File
	startPath, startArgv, files := path, argv, []uintptr{os.Stdin.Fd(), outF.Fd(), errF.Fd()}
	if g != nil {
		r, w, err := os.Pipe()
		if err != nil {
			outCopy.started(outF)
			errCopy.started(errF)
			outCopy.wait(0)
			errCopy.wait(0)
			g.disarm()
			return 0, nil, exitf(exitFailure, "cannot run %q: %v", argv[0], err)
		}
		defer w.Close()
		gateR, gateW = r, w
		startPath, files = "/bin/sh", append(files, gateR.Fd())
		startArgv = append([]string{"sh", "-c", gateScript, "dlock", gatePath(path)}, argv[1:]...)
	}
	pid, events, err := startChild(startPath, startArgv, env, files, sys)
	if gateR != nil {
		gateR.Close() // the gate's copy is the one that counts
	}
	outCopy.started(outF)
	errCopy.started(errF)
	if err != nil {
		outCopy.wait(0)
		errCopy.wait(0)
		if g != nil {
			g.disarm()
		}
		s.restoreTTY() // the child took the terminal before its exec failed
		code := exitCannotExec
		if errors.Is(err, syscall.ENOENT) {
			code = exitNotFound
		}
		return 0, nil, exitf(code, "cannot run %q: %v", argv[0], err)
	}
	s.pgid = pid
	stallAfterStart()
	if g != nil {
		if err := g.arm(pid); err != nil {
			fmt.Fprintf(stderr, "dlock: warning: guard process: %v\n", err)
		}
	}
	if gateW != nil {
		if _, err := io.WriteString(gateW, "go\n"); err != nil {
			// The gate's shell is gone (killed already): its exit is
			// reported as the command's.
			fmt.Fprintf(stderr, "dlock: warning: starting %q: %v\n", argv[0], err)
		}
		gateW.Close()
	}

	code, err = s.loop(ctx, events)

	if g != nil {
		if err := g.disarm(); err != nil {
			fmt.Fprintf(stderr, "dlock: warning: %v\n", err)
		}
	}
	s.restoreTTY()
	outCopy.wait(outputLinger)
	errCopy.wait(outputLinger)
	return code, s.lostErr, err
}

// gateScript is run by /bin/sh as the command's first process, with the
// command's path and arguments as "$@" and a pipe from dlock as fd 3. It
// waits for dlock's "go" (sent once the guard knows the command's group),
// then becomes the command with exec: same process, same group. If dlock
// dies before that, the pipe ends, and the shell exits without running
// anything (the parent-death signal would kill it anyway). The command's
// argv[0] is the path dlock found for it; as any shell's exec, this one
// sets PWD, and runs a file without a #! line as a shell script.
const gateScript = `read -r go <&3 && [ "$go" = go ] || exit 125
exec 3<&-
exec "$@"`

// gatePath is path as the gate's exec must be given it: one that starts
// with "-" would be taken for an option.
func gatePath(path string) string {
	if strings.HasPrefix(path, "-") {
		return "./" + path
	}
	return path
}

// startChild forks and execs the command and reports its state changes
// (stopped, continued, exited) on events, closed after the exit.
func startChild(path string, argv, env []string, files []uintptr, sys *syscall.SysProcAttr) (int, <-chan childEvent, error) {
	type started struct {
		pid int
		err error
	}
	st := make(chan started, 1)
	events := make(chan childEvent, 4)
	go func() {
		// The parent-death signal fires when the thread that forked the
		// child ends, not the process (go.dev/issue/27505): this goroutine
		// keeps its thread until the child has been reaped.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Env: env, Files: files, Sys: sys})
		st <- started{pid, err}
		if err != nil {
			close(events)
			return
		}
		for {
			var ws syscall.WaitStatus
			_, err := syscall.Wait4(pid, &ws, syscall.WUNTRACED|syscall.WCONTINUED, nil)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			events <- childEvent{ws, err}
			if err != nil || ws.Exited() || ws.Signaled() {
				close(events)
				return
			}
		}
	}()
	s := <-st
	return s.pid, events, s.err
}

// loop supervises until the command's first process has exited and its
// group has ended.
func (s *supervisor) loop(ctx context.Context, events <-chan childEvent) (int, error) {
	var ctxDone <-chan struct{}
	if s.sigs == nil {
		ctxDone = ctx.Done() // no relay (tests): forward the one cancellation
	}
	lost := s.lease.Done()
	var (
		code     int
		childErr error
		exited   bool
		poll     *time.Ticker
		pollC    <-chan time.Time
	)
	defer func() {
		if poll != nil {
			poll.Stop()
		}
		if s.killTimer != nil {
			s.killTimer.Stop()
		}
	}()
	for {
		if exited {
			reapGroup(s.pgid) // orphans that have exited (becomeSubreaper)
			if !groupAlive(s.pgid) {
				return code, childErr
			}
		}
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			switch {
			case ev.err != nil:
				exited, code = true, exitFailure
				childErr = exitf(exitFailure, "waiting for the command: %v", ev.err)
			case ev.ws.Exited() || ev.ws.Signaled():
				exited, code = true, exitStatus(ev.ws)
			case ev.ws.Stopped() && s.tty != nil && isJobControlStop(ev.ws.StopSignal()):
				// On a terminal a shell does job control: dlock stops too
				// and is continued by fg or bg. Without one (cron, a script)
				// nobody would continue it: it stays up and renewing, and a
				// SIGCONT to it continues the command.
				s.suspend()
			}
			if exited && poll == nil {
				poll = time.NewTicker(groupPoll)
				pollC = poll.C
			}
		case <-pollC:
			reapGroup(s.pgid)
		case sig := <-s.sigs:
			s.forward(sig)
		case <-ctxDone:
			ctxDone = nil
			sig := syscall.SIGINT
			var sc signalCause
			if errors.As(context.Cause(ctx), &sc) {
				sig, _ = sc.sig.(syscall.Signal)
			}
			signalGroup(s.pgid, sig)
		case <-lost:
			lost = nil
			s.lose(s.lease.Err())
		case <-s.killC():
			s.killTimer = nil
			signalGroup(s.pgid, syscall.SIGKILL)
			s.giveUp = time.After(killWait)
		case <-s.giveUp:
			if exited {
				fmt.Fprintf(s.stderr, "dlock: warning: processes of the command's group %d outlived SIGKILL by %v (stuck in the kernel?); exiting without them\n", s.pgid, killWait)
				return code, childErr
			}
			s.giveUp = nil // the first process is still to be reaped: wait for it
		}
	}
}

func (s *supervisor) killC() <-chan time.Time {
	if s.killTimer == nil {
		return nil
	}
	return s.killTimer.C
}

// forward passes a signal dlock received on to the command's group.
func (s *supervisor) forward(sig os.Signal) {
	ss, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	switch ss {
	case syscall.SIGPIPE:
		// dlock's own write to a closed pipe (its stderr): not the command's
		// business, and not a reason to die.
	default:
		// SIGTSTP stops the command; dlock follows once it has stopped
		// (suspend). SIGCONT continues it: a dlock stopped by SIGSTOP left
		// its command running, and continuing it again is harmless.
		signalGroup(s.pgid, ss)
	}
}

// lose terminates the command's group after a loss: SIGTERM (and SIGCONT,
// so that a stopped process gets it) at once, SIGKILL after --grace, whether
// or not the first process exits before. It signals before it prints: a
// write to a closed stderr must not delay or prevent the signals.
func (s *supervisor) lose(why error) {
	if s.lostErr != nil {
		return
	}
	s.lostErr = why
	signalGroup(s.pgid, syscall.SIGTERM)
	signalGroup(s.pgid, syscall.SIGCONT)
	s.killTimer = time.NewTimer(s.grace)
	fmt.Fprintf(s.stderr, "dlock: lock %q lost (%v): sent SIGTERM to the command's process group, SIGKILL in %v\n",
		s.lease.Name(), why, s.grace)
}

// isJobControlStop tells a stop by the terminal (Ctrl-Z, or reading or
// writing it from the background) from a SIGSTOP sent to the command alone.
func isJobControlStop(sig syscall.Signal) bool {
	return sig == syscall.SIGTSTP || sig == syscall.SIGTTIN || sig == syscall.SIGTTOU
}

// suspend follows the command into a job-control stop on a terminal: the
// rest of its group is stopped too, the terminal is taken back, and dlock
// stops itself, so that the shell sees the job stopped. The lock is not renewed while
// dlock is stopped: once continued, dlock lets the command go on only after
// the engine has confirmed that it still holds the lock with dlock's token;
// otherwise the command is terminated as after a loss.
func (s *supervisor) suspend() {
	if s.lostErr != nil {
		return // being terminated already
	}
	signalGroup(s.pgid, syscall.SIGSTOP) // members that ignore SIGTSTP stop too
	if s.tty != nil {
		if pg, err := foreground(s.tty); err == nil && pg == s.pgid {
			if err := setForeground(s.tty, syscall.Getpgrp()); err != nil {
				fmt.Fprintf(s.stderr, "dlock: warning: taking the terminal back: %v\n", err)
			}
		}
	}
	stopped := time.Now()
	stopSelf()
	d := time.Since(stopped)

	if err := s.stillHeld(d); err != nil {
		s.lose(err)
		return
	}
	if s.tty != nil {
		if pg, err := foreground(s.tty); err == nil && pg == syscall.Getpgrp() {
			// fg: the shell gave dlock the terminal; pass it on. After bg it
			// stays with the shell, and a command that reads it stops again.
			if err := setForeground(s.tty, s.pgid); err != nil {
				fmt.Fprintf(s.stderr, "dlock: warning: giving the terminal to the command: %v\n", err)
			}
		}
	}
	signalGroup(s.pgid, syscall.SIGCONT)
}

// stopSelf stops dlock with SIGSTOP and returns once it has been continued.
// The signal is sent to the calling thread, which stops before the kill
// returns; SIGSTOP (unlike SIGTSTP) is not discarded in an orphaned group.
func stopSelf() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_ = unix.Tgkill(os.Getpid(), unix.Gettid(), syscall.SIGSTOP)
}

// stillHeld asks the engine, after dlock was stopped for d, whether it still
// holds the lock for this lease.
func (s *supervisor) stillHeld(d time.Duration) error {
	select {
	case <-s.lease.Done():
		return s.lease.Err()
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.ttl)
	defer cancel()
	st, err := s.client.Status(ctx, s.lease.Name())
	d = d.Round(time.Millisecond)
	switch {
	case err != nil:
		return fmt.Errorf("%w: dlock was stopped for %v and the engine could not confirm that it still holds the lock: %v", dlock.ErrLockLost, d, err)
	case !st.Held || st.Token != s.lease.Token():
		return fmt.Errorf("%w: the lock expired while dlock was stopped for %v", dlock.ErrLockLost, d)
	}
	return nil
}

// restoreTTY gives the terminal back to dlock's group if the command's
// group (or a group that has ended) still has it, for a caller that does
// no job control (sh -c, a script): the next command it runs must be able
// to read the terminal.
func (s *supervisor) restoreTTY() {
	if s.tty == nil {
		return
	}
	if pg, err := foreground(s.tty); err == nil && s.lent && pg != syscall.Getpgrp() && (pg == s.pgid || !groupAlive(pg)) {
		if err := setForeground(s.tty, syscall.Getpgrp()); err != nil {
			fmt.Fprintf(s.stderr, "dlock: warning: giving the terminal back: %v\n", err)
		}
	}
	s.closeTTY()
}

func (s *supervisor) closeTTY() {
	if s.tty != nil {
		s.tty.Close()
		s.tty = nil
	}
}

// exitStatus returns the shell-style status of an exited process.
func exitStatus(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return exitSignalBase + int(ws.Signal())
	}
	return ws.ExitStatus()
}
