package safety

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
	"github.com/dlockio/dlock/safety/internal/check"
)

// scenario is one run: workers contending for one lock and one resource,
// a fault injector, and everything they recorded.
type scenario struct {
	t    *testing.T
	eng  *engine
	lock string
	ttl  time.Duration
	res  *check.Resource

	until int64         // check.Now() at which workers stop
	gc    bool          // workers run with GC stress
	hold  time.Duration // work done under the lock, between read and write
	pin   bool          // each worker reaches one server only (round robin)

	workload string // "" (mutex), "rwmutex", "semaphore", "election"
	limit    int    // the semaphore's permits
	unsafe   string // the in-process workers' broken driver: "release", "shared", "limit"

	mu      sync.Mutex
	ops     []check.Op
	pending map[[2]int]check.Op // begun, not ended: {client, id}
	acked   []int
	leaders []check.Observation
	faults  map[string]int
	nextID  int

	// pauseWriter, when set, is taken by the next write (or the next
	// pausePoint of the other workloads): the writer is paused (SIGSTOP,
	// or its gate in process) for pauseFor before the write is applied, as
	// a process stopped between its check of Done and its write would send
	// it late.
	pauseWriter chan chan struct{}
	pauseFor    time.Duration

	holder chan int // the id of a worker that just read under the lock

	wg        sync.WaitGroup
	procs     map[int]*proc
	inProxies map[int][]*proxy
	pinned    map[int]*testserver.Proc // the one server of each worker, when pin
}

func newScenario(t *testing.T, eng *engine, fenced bool, run time.Duration) *scenario {
	return &scenario{
		t: t, eng: eng, lock: "safety/" + t.Name(), ttl: eng.ttl,
		res:     check.NewResource(fenced),
		until:   check.Now() + int64(run),
		pending: map[[2]int]check.Op{}, faults: map[string]int{},
		procs: map[int]*proc{}, pauseWriter: make(chan chan struct{}),
		holder: make(chan int, 1), inProxies: map[int][]*proxy{},
		hold: eng.ttl / 100, pinned: map[int]*testserver.Proc{},
	}
}

func (s *scenario) fault(kind string) {
	s.mu.Lock()
	s.faults[kind]++
	s.mu.Unlock()
}

func (s *scenario) newID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	return s.nextID
}

func (s *scenario) begin(client, id int, op check.Op) {
	s.mu.Lock()
	s.pending[[2]int{client, id}] = op
	s.mu.Unlock()
}

func (s *scenario) end(client, id int, op check.Op) {
	s.mu.Lock()
	delete(s.pending, [2]int{client, id})
	s.ops = append(s.ops, op)
	s.mu.Unlock()
}

// nextHolder waits for the next worker that reads under the lock.
func (s *scenario) nextHolder(ctx context.Context) (int, bool) {
	select {
	case <-s.holder: // stale
	default:
	}
	select {
	case id := <-s.holder:
		return id, true
	case <-ctx.Done():
		return 0, false
	}
}

// route gives worker id its engine URL, through proxies of its own when
// the engine has network servers, so that one worker can be cut off. With
// pin, the URL names one server only, the workers taking turns.
func (s *scenario) route(id int) (string, []*proxy) {
	if s.eng.urlFor == nil {
		return s.eng.url, nil
	}
	var pxs []*proxy
	var hosts []string
	for _, srv := range s.eng.servers {
		px := newProxy(s.t, srv.Addr())
		pxs, hosts = append(pxs, px), append(hosts, px.Addr())
	}
	if s.pin {
		k := (id - 1) % len(hosts)
		s.mu.Lock()
		s.pinned[id] = s.eng.servers[k]
		s.mu.Unlock()
		hosts = hosts[k : k+1]
	}
	return s.eng.urlFor(hosts), pxs
}

// serverOf returns the one server worker id reaches, when pinned.
func (s *scenario) serverOf(id int) *testserver.Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pinned[id]
}

// proxiesOf returns the proxies of worker id.
func (s *scenario) proxiesOf(id int) []*proxy {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.procs[id]; p != nil {
		return p.proxies
	}
	return s.inProxies[id]
}

// pauseNextWriter pauses the next writer and waits until the pause is over
// (or the run ends). It reports whether a pause happened.
func (s *scenario) pauseNextWriter(ctx context.Context, d time.Duration) bool {
	done := make(chan struct{})
	s.pauseFor = d
	select {
	case s.pauseWriter <- done:
	case <-ctx.Done():
		return false
	}
	<-done
	return true
}

// cfg is the configuration of a new worker.
func (s *scenario) cfg() workerCfg {
	return workerCfg{ID: s.newID(), Lock: s.lock, TTL: s.ttl, Until: s.until, GCStress: s.gc, Hold: s.hold,
		Workload: s.workload, Limit: s.limit}
}

// startInProc starts a goroutine worker, with the broken driver s.unsafe
// names, if any.
func (s *scenario) startInProc() {
	s.t.Helper()
	cfg := s.cfg()
	url, pxs := s.route(cfg.ID)
	var drv driver.Driver
	var err error
	if url != "" {
		drv, err = openDriver(context.Background(), url)
	} else {
		drv, err = s.eng.newDriver()
	}
	s.mu.Lock()
	s.inProxies[cfg.ID] = pxs
	s.mu.Unlock()
	if err != nil {
		s.t.Fatalf("driver: %v", err)
	}
	w := &inProcWorld{s: s, client: cfg.ID, gate: &gate{}}
	var drop func(string)
	if s.unsafe == "release" {
		drop = s.eng.drop
	}
	c, err := newRecClient(drv, cfg, w, w.gate, drop, s.unsafe)
	if err != nil {
		s.t.Fatalf("client: %v", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		work(c, cfg, w)
		if err := c.Close(); err != nil && !errors.Is(err, dlock.ErrClosed) {
			s.t.Logf("worker %d: close: %v", cfg.ID, err)
		}
	}()
}

// proc is a worker process.
type proc struct {
	id      int
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stderr  bytes.Buffer
	done    chan struct{} // closed once reaped
	proxies []*proxy      // this worker's own way to the engine's servers
}

// startProc starts a worker process.
func (s *scenario) startProc() *proc {
	s.t.Helper()
	cfg := s.cfg()
	p := &proc{id: cfg.ID, done: make(chan struct{})}
	cfg.URL, p.proxies = s.route(cfg.ID)
	b, _ := json.Marshal(cfg)
	exe, err := os.Executable()
	if err != nil {
		s.t.Fatal(err)
	}
	p.cmd = exec.Command(exe, "-test.run=^$")
	p.cmd.Env = append(os.Environ(), workerEnv+"="+string(b))
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		s.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.procs[p.id] = p
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.serve(p, stdout)
		err := p.cmd.Wait()
		close(p.done)
		if err != nil && !isKilled(err) {
			s.t.Errorf("worker %d: %v\n%s", p.id, err, p.stderr.String())
		}
	}()
	return p
}

func isKilled(err error) bool {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	return false
}

// serve answers one worker process until it exits.
func (s *scenario) serve(p *proc, stdout io.Reader) {
	dec := json.NewDecoder(bufio.NewReader(stdout))
	enc := json.NewEncoder(p.stdin)
	for {
		var m msg
		if err := dec.Decode(&m); err != nil {
			return
		}
		switch m.T {
		case "begin":
			s.begin(p.id, m.ID, *m.Op)
		case "end":
			s.end(p.id, m.ID, *m.Op)
		case "read":
			c, set, ok := s.read(p.id, m.Token)
			_ = enc.Encode(reply{OK: ok, Counter: c, Set: set})
		case "write":
			ok := s.write(p.id, m.Token, m.Value, m.Set, m.Elem, p.pause)
			_ = enc.Encode(reply{OK: ok})
		case "recheck":
			_ = enc.Encode(reply{OK: s.recheck(p.id, m.Token, p.pause)})
		case "enter":
			_ = enc.Encode(reply{OK: s.enter(p.id, m.Token)})
		case "leave":
			s.leave(m.Token, p.pause)
			_ = enc.Encode(reply{OK: true})
		case "leader":
			if m.Obs != nil {
				m.Obs.Client = p.id
				s.leader(*m.Obs)
			}
		}
	}
}

// pause stops the worker process for d.
func (p *proc) pause(d time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGSTOP)
	time.Sleep(d) // the length of the injected pause
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
}

// kill SIGKILLs a worker process and records the crash.
func (s *scenario) kill(p *proc, kind string) {
	op := check.Op{Client: p.id, Kind: check.Crash, Call: check.Now(), Outcome: check.OK}
	_ = p.cmd.Process.Kill()
	<-p.done
	op.Return = check.Now()
	s.res.Evict(p.id) // its permit, as a server would see its connection close
	s.mu.Lock()
	s.ops = append(s.ops, op)
	delete(s.procs, p.id)
	s.mu.Unlock()
	s.fault(kind)
}

// finish waits for the workers and checks the run.
func (s *scenario) finish(name string) *check.Report {
	s.t.Helper()
	waitDone := make(chan struct{})
	go func() { s.wg.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case <-time.After(time.Duration(s.until-check.Now()) + 60*time.Second):
		s.t.Fatalf("workers did not finish")
	}
	s.mu.Lock()
	ops := s.ops
	for _, op := range s.pending {
		op.Return, op.Outcome = 0, check.Unknown // the worker died during the call
		ops = append(ops, op)
	}
	acked, leaders := s.acked, s.leaders
	s.mu.Unlock()
	run := check.Run{Name: name, Ops: ops, Res: s.res, Acked: acked, Faults: s.faults, Leaders: leaders}
	switch s.workload {
	case "rwmutex":
		run.Model, run.ModelName = &check.RWModel, "rw"
	case "semaphore":
		m := check.SemaphoreModel(s.limit)
		run.Model, run.ModelName = &m, fmt.Sprintf("semaphore/%d", s.limit)
	}
	if s.eng.earlyLoss {
		switch s.workload {
		case "":
			run.Model, run.ModelName = &check.EarlyLossLeaseModel, "lease/early-loss"
		case "rwmutex":
			run.Model, run.ModelName = &check.EarlyLossRWModel, "rw/early-loss"
		}
	}
	rep := check.Check(run, "out")
	s.t.Log(rep)
	return rep
}
