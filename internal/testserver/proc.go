package testserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var lookPath = exec.LookPath

// How long Start waits for a server to answer, and Stop for it to exit
// before it is killed.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 15 * time.Second
)

// Proc is a server process owned by one test. Its methods that can fail
// (Start, Stop, Kill, ...) report through the test's Fatalf, so call them
// from the test goroutine. Addr, Running and Name are safe from any goroutine.
type Proc struct {
	tb      testing.TB
	name    string
	addr    string
	argv    []string
	logPath string
	// ready returns nil once the process answers on addr.
	ready func(addr string) error
	host  *host // its namespace on a Network; nil on the test's own loopback
	// stopSig is what Stop sends (SIGTERM if 0); cred, if set, is the user
	// the process runs as.
	stopSig syscall.Signal
	cred    *syscall.Credential

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd has exited
	paused bool
}

func newProc(tb testing.TB, name, addr, logPath string, argv []string, ready func(string) error) *Proc {
	p := &Proc{tb: tb, name: name, addr: addr, argv: argv, logPath: logPath, ready: ready}
	tb.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.runningLocked() {
			sig := p.stopSig
			if sig == 0 {
				sig = syscall.SIGTERM
			}
			p.stopLocked(sig, stopTimeout)
		}
	})
	return p
}

// Name is a short label such as "redis" or "etcd-m1".
func (p *Proc) Name() string { return p.name }

// Addr is the client address, host:port.
func (p *Proc) Addr() string { return p.addr }

// LogPath is the file that receives the process's stdout and stderr.
func (p *Proc) LogPath() string { return p.logPath }

// Running reports whether the process has been started and has not exited
// (a paused process is running).
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runningLocked()
}

func (p *Proc) runningLocked() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Start (re)starts the process with the same data and configuration and
// waits until it answers. Starting a running process is a no-op.
func (p *Proc) Start() {
	p.tb.Helper()
	if err := p.launch(); err != nil {
		p.tb.Fatalf("testserver: start %s: %v", p.name, err)
	}
	if err := p.WaitReady(startTimeout); err != nil {
		p.tb.Fatalf("testserver: %v", err)
	}
}

// launch starts the process without waiting for it to answer.
func (p *Proc) launch() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.runningLocked() {
		return nil
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== testserver: starting %s\n", strings.Join(p.argv, " "))
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own process group: a Ctrl-C on `go test` reaches the test binary only,
	// whose cleanups stop the servers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: p.cred}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.cmd, p.done, p.paused = cmd, done, false
	return nil
}

// WaitReady waits until the process answers, the process exits or the
// timeout passes.
func (p *Proc) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if !p.Running() {
			return fmt.Errorf("%s exited before answering on %s%s", p.name, p.addr, p.logTail())
		}
		if last = p.ready(p.addr); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering on %s after %v: %v%s", p.name, p.addr, timeout, last, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop sends SIGTERM (the server's own fast-shutdown signal where that is
// another, as SIGINT for PostgreSQL) and waits for the process to exit
// (SIGKILL after 15 s).
func (p *Proc) Stop() {
	p.tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.runningLocked() {
		return
	}
	sig := p.stopSig
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	p.stopLocked(sig, stopTimeout)
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Proc) Kill() {
	p.tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.runningLocked() {
		return
	}
	p.stopLocked(syscall.SIGKILL, stopTimeout)
}

func (p *Proc) stopLocked(sig syscall.Signal, timeout time.Duration) {
	_ = p.cmd.Process.Signal(sig)
	if p.paused {
		_ = p.cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot act on SIGTERM
		p.paused = false
	}
	select {
	case <-p.done:
		return
	case <-time.After(timeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Pause freezes the process with SIGSTOP: it keeps its sockets but answers
// nothing, like a stalled machine.
func (p *Proc) Pause() {
	p.tb.Helper()
	p.signal(syscall.SIGSTOP, true)
}

// Resume continues a paused process with SIGCONT.
func (p *Proc) Resume() {
	p.tb.Helper()
	p.signal(syscall.SIGCONT, false)
}

func (p *Proc) signal(sig syscall.Signal, paused bool) {
	p.tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.runningLocked() {
		p.tb.Fatalf("testserver: %s: %v on a process that is not running", p.name, sig)
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.tb.Fatalf("testserver: %s: %v: %v", p.name, sig, err)
	}
	p.paused = paused
}

func (p *Proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	const max = 3000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return fmt.Sprintf("\n--- tail of %s:\n%s", p.logPath, b)
}

// startAll launches all procs, then waits for each (servers of a cluster
// only answer once a quorum is up).
func startAll(tb testing.TB, procs []*Proc, ready func(*Proc) error) {
	tb.Helper()
	for _, p := range procs {
		if err := p.launch(); err != nil {
			tb.Fatalf("testserver: start %s: %v", p.name, err)
		}
	}
	deadline := time.Now().Add(startTimeout)
	for _, p := range procs {
		var last error
		for {
			if !p.Running() {
				tb.Fatalf("testserver: %s exited during startup%s", p.name, p.logTail())
			}
			if last = ready(p); last == nil {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("testserver: %s not ready after %v: %v%s", p.name, startTimeout, last, p.logTail())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
