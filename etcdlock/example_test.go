package etcdlock_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/etcdlock"
	"github.com/dlockio/dlock/internal/testserver"
)

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	endpoints, prefix := testCluster() // e.g. []string{"10.0.0.1:2379", "10.0.0.2:2379"}, "myapp/locks"

	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close() // the dlock clients use cli but leave it open

	opts := &etcdlock.Options{Prefix: prefix}
	c, err := etcdlock.New(cli, opts, dlock.WithTTL(10*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	other, err := etcdlock.New(cli, opts) // another process, in real life
	if err != nil {
		fmt.Println(err)
		return
	}
	defer other.Close()

	lease, err := c.Mutex("reports/nightly").Lock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("holding", lease.Name())
	_, err = other.Mutex("reports/nightly").TryLock(ctx)
	fmt.Println("taken, for the other client:", errors.Is(err, dlock.ErrNotAcquired))

	// The token is the create revision of the holder's key: pass it to the
	// resource the lock protects, which refuses any older one.
	token := lease.Token()
	if err := lease.Unlock(ctx); err != nil {
		fmt.Println(err)
		return
	}
	next, err := other.Mutex("reports/nightly").TryLock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer next.Unlock(ctx)
	fmt.Println("the next holder's token is greater:", next.Token() > token)
	// Output:
	// holding reports/nightly
	// taken, for the other client: true
	// the next holder's token is greater: true
}

// Opening by URL: the driver makes an etcd client of its own and closes it
// with the dlock client.
func Example_open() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	endpoints, prefix := testCluster()
	url := etcdlock.Scheme + "://" + strings.Join(endpoints, ",") + "/" + prefix // etcd://10.0.0.1:2379,10.0.0.2:2379/myapp/locks

	c, err := dlock.Open(ctx, url, dlock.WithTTL(10*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	err = dlock.Do(ctx, c, "reports/weekly", func(ctx context.Context, l *dlock.Lease) error {
		st, err := c.Status(ctx, l.Name())
		fmt.Println("held:", st.Held, "waiters:", st.Waiters, "token matches:", st.Token == l.Token())
		return err
	})
	fmt.Println("err:", err)
	// Output:
	// held: true waiters: 0 token matches: true
	// err: <nil>
}

// testCluster returns the client addresses of the shared test cluster
// (internal/testserver; `make test` starts it) and a key prefix of the
// calling example's own, since other test runs may share the cluster.
//
// An Example can neither skip nor fail by itself: if the cluster does not
// answer, this prints why, in CI or not, so that the example fails with
// the reason in its output.
func testCluster() (endpoints []string, prefix string) {
	var tb exampleTB
	endpoints = testserver.Etcd(&tb)
	if tb.msg != "" {
		fmt.Println(tb.msg)
	}
	return endpoints, "dlocktest/example-" + rand.Text()
}

// exampleTB is the testing.TB testserver.Etcd wants, for an Example, which
// has none. testserver.Etcd calls only Helper, Fatalf and Skipf; the
// embedded nil TB makes any other call panic.
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
