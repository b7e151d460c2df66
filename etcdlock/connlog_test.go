package etcdlock

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testlog"
)

const (
	connLost     = testlog.ConnLost
	connRestored = testlog.ConnRestored
)

// TestConnectionLogged: with a logger, a client on an etcd:// URL that
// carries a password logs the loss of its connection to etcd and its return
// (driver.ConnNotifier) once each per outage, however often gRPC retries in
// between, with the held lock riding it out; a connection reset and made
// anew at once is not logged; no line holds the password.
func TestConnectionLogged(t *testing.T) {
	eps := authCluster(t)
	for _, tc := range []struct {
		name  string
		fault func(p *faultproxy.Proxy) (undo func())
		want  string // in the loss's detail; "": nothing logged
	}{
		// The server is down: connections are refused.
		{"Down", func(p *faultproxy.Proxy) func() {
			p.Refuse(true)
			p.Reset(faultproxy.Any)
			return func() { p.Refuse(false) }
		}, "every connection attempt fails"},
		// The connection is closed and new ones get no answer: gRPC keeps
		// connecting.
		{"Stalled", func(p *faultproxy.Proxy) func() {
			rm := p.Add(faultproxy.Any, faultproxy.Fault{Stall: true})
			p.Reset(faultproxy.Any)
			return func() { rm(); p.Reset(faultproxy.Any) }
		}, "still connecting after"},
		// The connection is reset once: gRPC connects again at once.
		{"Reset", func(p *faultproxy.Proxy) func() {
			p.Reset(faultproxy.Any)
			return func() {}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := faultproxy.Start(strings.TrimPrefix(eps[0], "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			h := testlog.New()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := dlock.Open(ctx, "etcd://locker:"+lockerPassword+"@"+p.Addr()+"/dlocktest",
				dlock.WithTTL(30*time.Second), dlock.WithLogger(h.Logger()))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			l, err := c.Mutex(benchName(t)).Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			const outages = 2
			for i := range outages {
				undo := tc.fault(p)
				if tc.want == "" {
					undo()
					break
				}
				lost := h.Await(t, connLost, i+1)
				// The outage lasts long enough for gRPC to try again a
				// few times (its backoff starts at 1 s): none of them
				// may be logged.
				time.Sleep(3 * time.Second)
				undo()
				back := h.Await(t, connRestored, i+1)
				t.Logf("%s\n%s", lost, back)
				for _, want := range []string{"cannot reach http://" + p.Addr() + ": " + tc.want, "dlock.held=1", "dlock.driver=etcdlock"} {
					if !strings.Contains(lost, want) {
						t.Errorf("logged %q: want %q in it", lost, want)
					}
				}
				for _, want := range []string{"connected to http://" + p.Addr() + " after ", "dlock.held=1", "dlock.driver=etcdlock"} {
					if !strings.Contains(back, want) {
						t.Errorf("logged %q: want %q in it", back, want)
					}
				}
			}
			// The connection works (and the lock rode the outages out). A
			// read first: clientv3 retries it until the connection is back,
			// where a release sent into the reset itself fails (gRPC does not
			// resend a Txn whose answer was lost; Unlock then reports
			// "retrying in the background" — stop 20's local CI).
			if st, err := c.Status(ctx, l.Name()); err != nil || !st.Held || st.Token != l.Token() {
				t.Fatalf("Status after the faults: %+v, %v; want held with token %d", st, err, l.Token())
			}
			select {
			case <-l.Done():
				t.Fatalf("the lock was lost: %v", context.Cause(l.Context()))
			default:
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			var lost, restored int
			for _, line := range h.Lines() {
				if strings.Contains(line, lockerPassword) {
					t.Errorf("logged the password: %q", line)
				}
				switch {
				case strings.HasPrefix(line, connLost):
					lost++
				case strings.HasPrefix(line, connRestored):
					restored++
				}
			}
			want := outages
			if tc.want == "" {
				want = 0
			}
			if lost != want || restored != want {
				t.Errorf("logged %d losses and %d returns of the connection, want %d of each", lost, restored, want)
			}
			for i, line := range h.Matching(connLost, connRestored) {
				if first := []string{connLost, connRestored}[i%2]; !strings.HasPrefix(line, first) {
					t.Errorf("connection news %d is %q, want %q: each loss followed by its return", i, line, first)
				}
			}
		})
	}
}

// TestConnDetailNoCredentials: the endpoints named in the connection news
// carry neither the user info of their URLs nor the client's password.
func TestConnDetailNoCredentials(t *testing.T) {
	// No Username in the config: the client would authenticate before
	// returning, with no server to answer.
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{"http://bob:S3cretPw@127.0.0.1:1", "127.0.0.1:2"}, Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cli.Password = "S3cretPw"
	d := newDriver(cli, nil, false)
	defer d.Close()
	got := d.endpoints()
	if got != "http://127.0.0.1:1,127.0.0.1:2" {
		t.Errorf("endpoints named %q, want %q", got, "http://127.0.0.1:1,127.0.0.1:2")
	}
}
