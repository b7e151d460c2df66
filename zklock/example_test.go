package zklock_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
	"github.com/dlockio/dlock/zklock"
)

// Open a client from a zk:// URL: servers, then the znode under which the
// lock queues live.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	servers, prefix := testEnsemble()                                  // e.g. []string{"10.0.0.1:2181", "10.0.0.2:2181"}, "/myapp/locks"
	url := zklock.Scheme + "://" + strings.Join(servers, ",") + prefix // zk://10.0.0.1:2181,10.0.0.2:2181/myapp/locks

	c, err := dlock.Open(ctx, url, dlock.WithTTL(4*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Println("fencing:", c.Capabilities().Fencing)

	l, err := c.Mutex("billing/nightly").Lock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	// The token is the czxid of the holder's node, which rises across the
	// whole ensemble: pass it to the resource, which refuses older ones.
	fmt.Println("holding:", l.Token() > 0)
	if err := l.Unlock(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// fencing: strong
	// holding: true
}

// Take locks on a connection of your own: its session holds them, and the
// session timeout given to zk.Connect is the locks' TTL.
func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	servers, prefix := testEnsemble()
	const sessionTimeout = 4 * time.Second
	conn, events, err := zk.Connect(servers, sessionTimeout, zk.WithLogInfo(false))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close() // closing the client leaves conn open

	c, err := zklock.New(conn, events, &zklock.Options{SessionTimeout: sessionTimeout, Prefix: prefix})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	err = dlock.Do(ctx, c, "reports", func(ctx context.Context, l *dlock.Lease) error {
		st, err := c.Status(ctx, "reports")
		fmt.Println("held:", st.Held, "token matches:", st.Token == l.Token())
		return err
	})
	fmt.Println("err:", err)
	// Output:
	// held: true token matches: true
	// err: <nil>
}

// testEnsemble returns the client addresses of the shared test ensemble
// (internal/testserver; `make test` starts it) and the examples' prefix.
// The prefix is a persistent node, so it is the same for every run rather
// than one more left behind per run; runs that share the ensemble at the
// same time only wait for each other's locks.
//
// An Example can neither skip nor fail by itself: if the ensemble does not
// answer, this prints why, in CI or not, so that the example fails with
// the reason in its output.
func testEnsemble() (servers []string, prefix string) {
	var tb exampleTB
	servers = testserver.ZooKeeper(&tb)
	if tb.msg != "" {
		fmt.Println(tb.msg)
	}
	return servers, "/dlocktest/example"
}

// exampleTB is the testing.TB testserver.ZooKeeper wants, for an Example,
// which has none. testserver.ZooKeeper calls only Helper, Fatalf and Skipf;
// the embedded nil TB makes any other call panic.
type exampleTB struct {
	testing.TB
	msg string
}

func (*exampleTB) Helper() {}

func (tb *exampleTB) Fatalf(format string, args ...any) {
	if tb.msg == "" {
		tb.msg = fmt.Sprintf(format, args...)
	}
}

func (tb *exampleTB) Skipf(format string, args ...any) { tb.Fatalf(format, args...) }
