package pglock

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// envHolder makes the test binary a lock holder (holderMain) instead of
// running the tests.
const envHolder = "PGLOCK_TEST_HOLDER"

// holderMain takes the lock named by envHolder on the server of
// DLOCK_TEST_PG with a TTL of 1 s, prints "token N", then prints "lost" when
// its lease ends, and exits.
func holderMain() {
	pool := os.Getenv(testserver.EnvPostgres)
	ctx := context.Background()
	c, err := dlock.Open(ctx, pool+"&"+TableParam+"="+testTable, dlock.WithTTL(time.Second))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	l, err := c.Mutex(os.Getenv(envHolder)).Lock(ctx)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("token", l.Token())
	<-l.Done()
	fmt.Println("lost", context.Cause(l.Context()))
	os.Exit(0)
}

// A holder process frozen (SIGSTOP) past its TTL: the server ends its
// session when the TTL has passed since its last renewal, the next waiter
// gets the lock with a greater token, and the holder, thawed, learns at
// once that its lease is over.
func TestFrozenHolder(t *testing.T) {
	url := testserver.Postgres(t)
	if !strings.Contains(url, "?") {
		url += "?"
	}
	name := lockName(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHolder+"="+name, testserver.EnvPostgres+"="+url)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(out)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "token ") {
		t.Fatalf("holder: %q", lines.Text())
	}
	holderToken, _ := strconv.ParseUint(strings.TrimPrefix(lines.Text(), "token "), 10, 64)

	c, _ := newClient(t, url, dlock.WithTTL(5*time.Second))
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := mustLock(t, c, name)
	defer l.Unlock(ctx)
	took := time.Since(stopped)
	t.Logf("granted %v after the holder froze (TTL 1 s)", took)
	if took > 2*time.Second+500*time.Millisecond {
		t.Errorf("granted %v after the holder froze, want within TTL 1 s + its renewal interval + slack", took)
	}
	if l.Token() <= holderToken {
		t.Errorf("token %d after the frozen holder's %d", l.Token(), holderToken)
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	thawed := time.Now()
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "lost") {
		t.Fatalf("thawed holder: %q, want lost", lines.Text())
	}
	t.Logf("thawed holder: %s, %v after SIGCONT", lines.Text(), time.Since(thawed))
	if d := time.Since(thawed); d > time.Second {
		t.Errorf("thawed holder learned of its loss after %v, want at once", d)
	}
}
