package safety

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/safety/internal/check"
)

// workerCfg tells a worker what to do; child processes get it as JSON in
// the environment.
type workerCfg struct {
	ID       int
	URL      string // engine URL, for child processes
	Lock     string
	TTL      time.Duration
	Until    int64         // check.Now() at which to stop
	GCStress bool          // run with forced collections and CPU hogs
	Hold     time.Duration // work done under the lock, between read and write
	Workload string        // "" (mutex), "rwmutex", "semaphore" or "election"
	Limit    int           // the semaphore's permits
}

// world is what a worker talks to: the recorder and the protected resource.
type world interface {
	recorder
	Read(client int, token uint64) (counter int, set []int, ok bool)
	Write(client int, token uint64, value int, set []int, elem int) bool
	Recheck(client int, token uint64) bool // a reader's second read
	Enter(client int, token uint64) bool   // a permit holder registers
	Leave(client int, token uint64)
	Leader(o check.Observation) // an election's leader read
}

// work runs the workload cfg names until cfg.Until: the mutex's (below),
// or a read-write lock's, a semaphore's or an election's (workloads_test.go).
func work(c *dlock.Client, cfg workerCfg, w world) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.Until-check.Now()))
	defer cancel()
	if cfg.GCStress {
		stopHog := gcStress(ctx)
		defer stopHog()
	}
	var step func(ctx context.Context, i int) (*dlock.Lease, error)
	switch cfg.Workload {
	case "":
		m := c.Mutex(cfg.Lock)
		step = func(ctx context.Context, i int) (*dlock.Lease, error) {
			l, err := m.Lock(ctx)
			if err == nil {
				readModifyWrite(l, cfg, w, i)
			}
			return l, err
		}
	case "rwmutex":
		step = rwStep(c, cfg, w)
	case "semaphore":
		step = semStep(c, cfg, w)
	case "election":
		var stop func()
		step, stop = electionStep(ctx, c, cfg, w)
		defer stop()
	default:
		panic("unknown workload " + cfg.Workload)
	}
	for i := 0; ctx.Err() == nil; i++ {
		l, err := step(ctx, i)
		if err != nil {
			if ctx.Err() == nil {
				// An engine error (a fault is being injected): do not spin.
				t := time.NewTimer(cfg.TTL / 10)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
			continue
		}
		uctx, ucancel := context.WithTimeout(context.Background(), 2*cfg.TTL)
		_ = l.Unlock(uctx) // lost or failed: the lease has ended either way
		ucancel()
	}
}

// readModifyWrite is the mutex workload's work under the lock: read the
// counter and the set, add one and an element of our own, write them back.
// It checks Done before writing, as a careful client would: what still goes
// wrong is what a pause between that check and the write lets through.
func readModifyWrite(l *dlock.Lease, cfg workerCfg, w world, i int) {
	counter, set, ok := w.Read(cfg.ID, l.Token())
	if !ok {
		return
	}
	time.Sleep(cfg.Hold) // the work done under the lock; keeps the history checkable
	select {
	case <-l.Done():
	default:
		elem := cfg.ID*1_000_000 + i
		w.Write(cfg.ID, l.Token(), counter+1, append(set, elem), elem)
	}
}

// gcStress forces collections and keeps a CPU busy allocating, so that
// renewals and the worker are delayed by the runtime, until ctx ends.
func gcStress(ctx context.Context) (stop func()) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		var keep [][]byte
		for ctx.Err() == nil {
			keep = append(keep, make([]byte, 64<<10))
			if len(keep) > 512 {
				keep = nil
			}
		}
	}()
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				runtime.GC()
			}
		}
	}()
	return wg.Wait
}

// newRecClient wraps drv in a recording driver and a client.
func newRecClient(drv driver.Driver, cfg workerCfg, rec recorder, g *gate, unsafeDrop func(string), unsafeMode string) (*dlock.Client, error) {
	rd := &recDriver{inner: drv, client: cfg.ID, rec: rec, gate: g, unsafeDrop: unsafeDrop, unsafeMode: unsafeMode, closed: make(chan struct{})}
	c, err := dlock.NewClient(rd, dlock.WithTTL(cfg.TTL))
	if err != nil {
		drv.Close()
	}
	return c, err
}

// openDriver opens the driver behind url. dlock.Open wraps it in a client
// at once; we take the driver out and give it our own client, leaving the
// first one unused (it holds nothing: no goroutine, no lease).
func openDriver(ctx context.Context, url string) (driver.Driver, error) {
	c, err := dlock.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	return c.Driver(), nil
}

// Child processes: the test binary re-executed with workerEnv set. They
// speak JSON lines: requests and records on stdout, replies on stdin.
const workerEnv = "DLOCK_SAFETY_WORKER"

type msg struct {
	T     string             `json:"t"` // begin, end, read, write, recheck, enter, leave, leader
	ID    int                `json:"id,omitempty"`
	Op    *check.Op          `json:"op,omitempty"`
	Token uint64             `json:"tok,omitempty"`
	Value int                `json:"v,omitempty"`
	Set   []int              `json:"set,omitempty"`
	Elem  int                `json:"e,omitempty"`
	Obs   *check.Observation `json:"obs,omitempty"`
}

type reply struct {
	OK      bool  `json:"ok"`
	Counter int   `json:"c"`
	Set     []int `json:"set"`
}

// pipeWorld is a child's world: the parent at the other end of two pipes.
type pipeWorld struct {
	mu  sync.Mutex
	enc *json.Encoder
	dec *json.Decoder
	seq int
	err error // the first pipe error: the parent is gone
}

func (p *pipeWorld) send(m msg, r *reply) {
	if p.err != nil {
		return
	}
	if p.err = p.enc.Encode(m); p.err == nil && r != nil {
		p.err = p.dec.Decode(r)
	}
}

func (p *pipeWorld) Begin(op check.Op) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	p.send(msg{T: "begin", ID: p.seq, Op: &op}, nil)
	return p.seq
}

func (p *pipeWorld) End(id int, op check.Op) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.send(msg{T: "end", ID: id, Op: &op}, nil)
}

func (p *pipeWorld) Read(_ int, token uint64) (int, []int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var r reply
	p.send(msg{T: "read", Token: token}, &r)
	return r.Counter, r.Set, r.OK && p.err == nil
}

func (p *pipeWorld) Write(_ int, token uint64, value int, set []int, elem int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	var r reply
	p.send(msg{T: "write", Token: token, Value: value, Set: set, Elem: elem}, &r)
	return r.OK && p.err == nil
}

func (p *pipeWorld) Recheck(_ int, token uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	var r reply
	p.send(msg{T: "recheck", Token: token}, &r)
	return r.OK && p.err == nil
}

func (p *pipeWorld) Enter(_ int, token uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	var r reply
	p.send(msg{T: "enter", Token: token}, &r)
	return r.OK && p.err == nil
}

func (p *pipeWorld) Leave(_ int, token uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var r reply
	p.send(msg{T: "leave", Token: token}, &r) // waits, so that a pause finds it waiting
}

func (p *pipeWorld) Leader(o check.Observation) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.send(msg{T: "leader", Obs: &o}, nil)
}

// childMain runs one worker process.
func childMain(cfgJSON string) int {
	var cfg workerCfg
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "worker config:", err)
		return 2
	}
	out := bufio.NewWriter(os.Stdout)
	w := &pipeWorld{enc: json.NewEncoder(flushWriter{out}), dec: json.NewDecoder(bufio.NewReader(os.Stdin))}
	// A worker may start while a fault is injected (a server restarting
	// on a loaded machine): it keeps trying, as it would to take the lock.
	drv, err := openDriver(context.Background(), cfg.URL)
	for err != nil && check.Now() < cfg.Until {
		time.Sleep(cfg.TTL / 10) // a retry interval, not a synchronisation
		drv, err = openDriver(context.Background(), cfg.URL)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker open:", err)
		return 2
	}
	c, err := newRecClient(drv, cfg, w, nil, nil, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker client:", err)
		return 2
	}
	work(c, cfg, w)
	if err := c.Close(); err != nil && !errors.Is(err, dlock.ErrClosed) {
		fmt.Fprintln(os.Stderr, "worker close:", err)
	}
	w.mu.Lock()
	perr := w.err
	w.mu.Unlock()
	if perr != nil && !errors.Is(perr, io.EOF) {
		fmt.Fprintln(os.Stderr, "worker pipe:", perr)
	}
	return 0
}

// flushWriter flushes after every line so the parent sees each record at once.
type flushWriter struct{ w *bufio.Writer }

func (f flushWriter) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if err == nil {
		err = f.w.Flush()
	}
	return n, err
}
