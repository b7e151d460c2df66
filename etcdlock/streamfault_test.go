package etcdlock

import (
	"context"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// watchMethod is the gRPC method of etcd's watch streams.
const watchMethod = "/etcdserverpb.Watch/Watch"

// streamFaults puts drivertest faults on one client's etcd watch streams. gRPC carries every stream and request of a client over one HTTP/2
// connection per server, so a TCP proxy cannot single out the watch stream;
// a client-side stream interceptor (passed in clientv3.Config.DialOptions)
// can. It acts on whole messages, as they cross the client's gRPC layer:
//
//   - Delay: each message received is handed to the client its delay after
//     it arrived (a delay line: later messages are read meanwhile, so delays
//     do not add up); each message sent is held its delay before it goes out
//     (one after another: back-to-back sends add up, but a client sends a
//     watch stream little besides creating and cancelling watches).
//   - Stall: messages are held, both ways or one, until the fault is undone.
//   - Down: open streams fail with codes.Unavailable and new ones are
//     refused with it, as clientv3 sees a lost connection; clientv3 reopens
//     the stream with its own backoff once the fault is undone.
//   - Reset: the streams open now fail so, once; new ones are let through.
type streamFaults struct {
	mu      sync.Mutex
	faults  map[*drivertest.Fault]struct{}
	resets  int           // Reset faults applied: a stream opened before the latest fails
	opened  int           // watch streams opened
	changed chan struct{} // closed and replaced when faults change
}

func newStreamFaults() *streamFaults {
	return &streamFaults{faults: map[*drivertest.Fault]struct{}{}, changed: make(chan struct{})}
}

// add puts f on the streams until undo is called (more than once is fine).
func (sf *streamFaults) add(f drivertest.Fault) (undo func()) {
	if f.Reset {
		sf.mu.Lock()
		sf.resets++
		sf.notifyLocked()
		sf.mu.Unlock()
		return func() {}
	}
	fp := &f
	sf.mu.Lock()
	sf.faults[fp] = struct{}{}
	sf.notifyLocked()
	sf.mu.Unlock()
	return func() {
		sf.mu.Lock()
		delete(sf.faults, fp)
		sf.notifyLocked()
		sf.mu.Unlock()
	}
}

func (sf *streamFaults) notifyLocked() {
	close(sf.changed)
	sf.changed = make(chan struct{})
}

// state is what the faults in force do to messages going dir.
func (sf *streamFaults) state(dir drivertest.Direction) (delay time.Duration, stall, down bool, changed <-chan struct{}) {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	for f := range sf.faults {
		down = down || f.Down
		if f.Dir == drivertest.BothWays || f.Dir == dir {
			delay = max(delay, f.Delay)
			stall = stall || f.Stall
		}
	}
	return delay, stall, down, sf.changed
}

var errStreamDown = status.Error(codes.Unavailable, "etcdlock test: watch stream cut by a fault")

// hold waits until a message that crossed at 'at' going dir may be passed
// on. It returns errStreamDown if the stream is cut meanwhile, or ctx's
// error.
func (sf *streamFaults) hold(ctx context.Context, dir drivertest.Direction, at time.Time) error {
	for {
		delay, stall, down, changed := sf.state(dir)
		if down {
			return errStreamDown
		}
		if stall {
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		}
		wait := time.Until(at.Add(delay))
		if wait <= 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			return nil
		case <-changed:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// interceptor is the grpc.StreamClientInterceptor to chain into the client
// (grpc.WithChainStreamInterceptor: clientv3 sets its own with
// WithStreamInterceptor, which a second WithStreamInterceptor would replace).
func (sf *streamFaults) interceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if method != watchMethod {
		return streamer(ctx, desc, cc, method, opts...)
	}
	if _, _, down, _ := sf.state(drivertest.BothWays); down {
		return nil, errStreamDown
	}
	ctx, cancel := context.WithCancel(ctx)
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		cancel()
		return nil, err
	}
	sf.mu.Lock()
	gen := sf.resets
	sf.opened++
	sf.mu.Unlock()
	s := &faultyStream{ClientStream: cs, sf: sf, gen: gen, cancel: cancel, recvd: make(chan received, 1024)}
	go s.readAhead()
	return s, nil
}

// faultyStream wraps one stream. A goroutine reads messages ahead into
// recvd with their arrival time, so that each is delayed from when it
// arrived; it ends when the stream does (an error from the inner RecvMsg).
// A stream failed by a fault is cancelled underneath, as a broken
// connection would end it on the server.
type faultyStream struct {
	grpc.ClientStream
	sf     *streamFaults
	gen    int // sf.resets when the stream opened
	cancel context.CancelFunc
	recvd  chan received
	err    error // the stream's end; RecvMsg's goroutine only
}

type received struct {
	msg proto.Message
	err error
	at  time.Time
}

func (s *faultyStream) readAhead() {
	defer close(s.recvd)
	for {
		msg := new(pb.WatchResponse)
		err := s.ClientStream.RecvMsg(msg)
		select {
		case s.recvd <- received{msg, err, time.Now()}:
		case <-s.Context().Done():
			return
		}
		if err != nil {
			return
		}
	}
}

func (s *faultyStream) RecvMsg(m any) error {
	if s.err != nil {
		return s.err
	}
	for {
		_, _, down, changed := s.sf.state(drivertest.ToClient)
		if down || s.reset() { // an idle stream fails too, as on a broken connection
			return s.fail(errStreamDown)
		}
		select {
		case <-changed:
			continue
		case r, ok := <-s.recvd:
			if !ok { // readAhead saw the stream's context end
				return s.fail(status.FromContextError(s.Context().Err()).Err())
			}
			if err := s.sf.hold(s.Context(), drivertest.ToClient, r.at); err != nil {
				return s.fail(err)
			}
			if r.err != nil {
				return s.fail(r.err)
			}
			proto.Merge(m.(proto.Message), r.msg)
			return nil
		}
	}
}

// reset says whether a Reset came since the stream opened.
func (s *faultyStream) reset() bool {
	s.sf.mu.Lock()
	defer s.sf.mu.Unlock()
	return s.sf.resets > s.gen
}

func (s *faultyStream) fail(err error) error {
	s.err = err
	s.cancel()
	return err
}

func (s *faultyStream) SendMsg(m any) error {
	if s.reset() {
		return errStreamDown
	}
	if err := s.sf.hold(s.Context(), drivertest.ToEngine, time.Now()); err != nil {
		return err
	}
	return s.ClientStream.SendMsg(m)
}

// TestWatchFault: the "watch" kind delays, holds and cuts only the watch
// stream; requests on the same client pass untouched.
func TestWatchFault(t *testing.T) {
	eps := testserver.Etcd(t)
	admin := newClient(t, eps)
	c := newConn(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := benchName(t)

	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := c.cli.Watch(wctx, key, clientv3.WithCreatedNotify())
	if wr := <-wch; !wr.Created {
		t.Fatalf("first watch response %+v, want Created", wr)
	}
	// put writes key through admin and returns when c's watch delivers it.
	put := func(what string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := admin.Put(ctx, key, what); err != nil {
			t.Fatal(err)
		}
		select {
		case wr, ok := <-wch:
			if !ok || len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != what {
				t.Fatalf("%s: watch response %+v (open %v), want the put", what, wr, ok)
			}
		case <-time.After(within):
			t.Fatalf("%s: no event within %v", what, within)
		}
		return time.Since(start)
	}
	get := func(what string) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := c.cli.Get(ctx, key); err != nil {
			t.Fatalf("%s: Get: %v", what, err)
		}
		return time.Since(start)
	}

	const delay = 600 * time.Millisecond
	undo, err := c.fault("watch", drivertest.Fault{Delay: delay, Dir: drivertest.ToClient})
	if err != nil {
		t.Fatal(err)
	}
	if d := get("delayed watch"); d >= delay {
		t.Errorf("Get took %v with only the watch stream delayed by %v", d, delay)
	}
	if d := put("delayed", 10*time.Second); d < delay {
		t.Errorf("event after %v, want at least the %v delay", d, delay)
	}
	undo()

	undo, err = c.fault("watch", drivertest.Fault{Stall: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Put(ctx, key, "stalled"); err != nil {
		t.Fatal(err)
	}
	select {
	case wr := <-wch:
		t.Fatalf("event %+v through a stalled watch stream", wr)
	case <-time.After(time.Second):
	}
	if d := get("stalled watch"); d >= time.Second {
		t.Errorf("Get took %v with only the watch stream stalled", d)
	}
	undo()
	select {
	case wr := <-wch:
		if len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != "stalled" {
			t.Fatalf("after the stall: %+v, want the held put", wr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held event not delivered within 10 s of the stall's end")
	}

	undo, err = c.fault("watch", drivertest.Fault{Down: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Put(ctx, key, "while down"); err != nil {
		t.Fatal(err)
	}
	select {
	case wr := <-wch:
		t.Fatalf("event %+v through a cut watch stream", wr)
	case <-time.After(time.Second):
	}
	if d := get("cut watch"); d >= time.Second {
		t.Errorf("Get took %v with only the watch stream cut", d)
	}
	undo()
	// clientv3 reopens the stream and resumes the watch where it was.
	select {
	case wr := <-wch:
		if len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != "while down" {
			t.Fatalf("after the cut: %+v, want the missed put", wr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("missed event not delivered within 10 s of the cut's end")
	}
	put("healed", 10*time.Second)

	// A reset cuts the stream open now, once: clientv3 opens another at
	// once and the watch goes on.
	c.watch.mu.Lock()
	opened := c.watch.opened
	c.watch.mu.Unlock()
	if _, err := c.fault("watch", drivertest.Fault{Reset: true}); err != nil {
		t.Fatal(err)
	}
	put("after a reset", 10*time.Second)
	c.watch.mu.Lock()
	reopened := c.watch.opened
	c.watch.mu.Unlock()
	if reopened <= opened {
		t.Errorf("watch streams opened: %d before the reset, %d after: the reset cut nothing", opened, reopened)
	}
}
