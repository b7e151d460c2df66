package redislock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// listNames returns the names of ls.
func listNames(ls []dlock.Listed) []string {
	var ns []string
	for _, l := range ls {
		ns = append(ns, l.Name)
	}
	return ns
}

// prefixClient returns a client on rdb whose keys start with prefix.
func prefixClient(t *testing.T, rdb redis.UniversalClient, prefix string) *dlock.Client {
	t.Helper()
	c, err := New(rdb, &Options{Prefix: prefix}, dlock.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestListGlobPrefixAndEscapedNames: a driver prefix holding MATCH's
// pattern bytes (* ? [ ] \) lists only its own keys, not those of a prefix
// the unquoted pattern would match; names of any bytes (pattern bytes
// included) come back as given, a List prefix holding pattern bytes
// matches only itself, and the order is the names' byte order.
func TestListGlobPrefixAndEscapedNames(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	base := fmt.Sprintf("lst%d", time.Now().UnixNano())
	pa := base + `*?[ab]\:`
	// pb matches pa read as a pattern: * = "z", ? = "z", [ab] = "a", \: = ":".
	pb := base + "zza:"
	a := prefixClient(t, adminClient(t, addr), pa)
	b := prefixClient(t, adminClient(t, addr), pb)

	names := []string{"x*", "x?", "x[", "xy", "x/ü %", "x{}", "x]", `x\`, "x~"}
	var held []*dlock.Lease
	for _, n := range names {
		l, err := a.Mutex(n).TryLock(ctx)
		if err != nil {
			t.Fatalf("TryLock(%q): %v", n, err)
		}
		held = append(held, l)
	}
	other, err := b.Mutex("x*y").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}

	want := slices.Clone(names)
	slices.Sort(want)
	got, err := a.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(listNames(got), want) {
		t.Errorf("List(\"\") under prefix %q = %q, want %q", pa, listNames(got), want)
	}
	for _, l := range got {
		i := slices.Index(names, l.Name)
		if i < 0 {
			continue
		}
		if !l.Status.Held || l.Status.Token != held[i].Token() || l.Status.Holders != 1 || l.Status.TTLLeft <= 0 {
			t.Errorf("List: %q = %+v, want held by token %d", l.Name, l.Status, held[i].Token())
		}
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"x*", []string{"x*"}},
		{"x?", []string{"x?"}},
		{"x[", []string{"x["}},
		{`x\`, []string{`x\`}},
		{"x/", []string{"x/ü %"}},
		{"y", nil},
	} {
		got, err := a.List(ctx, tc.prefix)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(listNames(got), tc.want) {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, listNames(got), tc.want)
		}
	}
	got, err = b.List(ctx, "")
	if err != nil || !slices.Equal(listNames(got), []string{"x*y"}) {
		t.Errorf("List under prefix %q = %q, %v; want [x*y] only", pb, listNames(got), err)
	}

	// Prefixes of one length, the second matching the first read as a
	// pattern (? = "q", * = "q"): MATCH lets both through, the
	// exact check of the prefix keeps the other one out.
	a2 := prefixClient(t, adminClient(t, addr), base+"2?*:")
	b2 := prefixClient(t, adminClient(t, addr), base+"2qq:")
	for _, c := range []*dlock.Client{a2, b2} {
		l, err := c.Mutex("n").TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	got, err = a2.List(ctx, "")
	if err != nil || len(got) != 1 || got[0].Status.Token != held[len(held)-2].Token() {
		t.Errorf("List under prefix %q = %+v, %v; want its own n only", base+"2?*:", got, err)
	}

	for _, l := range held {
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = a.List(ctx, "")
	if err != nil || len(got) != 0 {
		t.Errorf("List after every unlock = %q, %v; want none", listNames(got), err)
	}
}

// TestListStatusAndLeftovers: each listed name has the Status that Status
// gives (readers, permits, waiters); a name with only its fence counter
// left, keys this driver cannot have made, and a hashed name ("~": listed
// under that engine name, only with an empty List prefix) are handled as
// driver.Lister says.
func TestListStatusAndLeftovers(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	prefix := fmt.Sprintf("lst%d:", time.Now().UnixNano())
	admin := adminClient(t, addr)
	c := prefixClient(t, admin, prefix)

	// A name released: its fence counter stays, but it is not listed.
	l, err := c.Mutex("gone").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	d := &Driver{prefix: prefix}
	if n, err := admin.Exists(ctx, d.keysOf("gone").fence).Result(); err != nil || n != 1 {
		t.Fatalf("fence counter of a released name: EXISTS = %d, %v; want 1 (the test needs a leftover)", n, err)
	}

	var leases []*dlock.Lease
	take := func(l *dlock.Lease, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	take(c.RWMutex("readers").TryRLock(ctx))
	take(c.RWMutex("readers").TryRLock(ctx))
	take(c.Semaphore("sem", 3).TryAcquire(ctx))
	take(c.Mutex("waited").TryLock(ctx))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waited := make(chan error, 1)
	go func() {
		l, err := c.Mutex("waited").Lock(wctx)
		if err == nil {
			err = l.Unlock(ctx)
		}
		waited <- err
	}()
	waitFor(t, 5*time.Second, "a queued waiter", func() bool {
		st, err := c.Status(ctx, "waited")
		return err == nil && st.Waiters == 1
	})

	// Keys under the prefix that Escape cannot have made, and a hashed name.
	hashed := "~" + strings.Repeat("ab", 32)
	foreign := []string{prefix + "{a.b}", prefix + "{%41}", prefix + "nobrace", prefix + "{" + hashed + "}"}
	t.Cleanup(func() { admin.Del(context.Background(), foreign...) })
	for _, k := range foreign {
		if err := admin.Set(ctx, k, "someone", 10*time.Second).Err(); err != nil {
			t.Fatal(err)
		}
	}

	got, err := c.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"readers", "sem", "waited", hashed}; !slices.Equal(listNames(got), want) {
		t.Errorf("List(\"\") = %q, want %q", listNames(got), want)
	}
	for _, l := range got {
		if l.Name == hashed {
			if !l.Status.Held {
				t.Errorf("hashed name listed as %+v, want held", l.Status)
			}
			continue
		}
		st, err := c.Status(ctx, l.Name)
		if err != nil {
			t.Fatal(err)
		}
		if l.Status.TTLLeft <= 0 || l.Status.TTLLeft > 10*time.Second {
			t.Errorf("List: %q TTLLeft = %v, want in (0, 10s]", l.Name, l.Status.TTLLeft)
		}
		l.Status.TTLLeft, st.TTLLeft = 0, 0
		if l.Status != st {
			t.Errorf("List: %q = %+v, Status = %+v", l.Name, l.Status, st)
		}
	}
	if len(got) == 4 {
		if st := got[0].Status; st.Holders != 2 || st.Mode != driver.Shared {
			t.Errorf("readers listed as %+v, want 2 shared holders", st)
		}
		if st := got[1].Status; st.Holders != 1 || st.Limit != 3 {
			t.Errorf("sem listed as %+v, want 1 holder of 3 permits", st)
		}
		if st := got[2].Status; st.Waiters != 1 || st.Token != leases[3].Token() {
			t.Errorf("waited listed as %+v, want 1 waiter, token %d", st, leases[3].Token())
		}
	}
	for _, p := range []string{"~", "a", "w"} {
		got, err := c.List(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{"~": nil, "a": nil, "w": {"waited"}}[p]
		if !slices.Equal(listNames(got), want) {
			t.Errorf("List(%q) = %q, want %q (a hashed name only with an empty prefix)", p, listNames(got), want)
		}
	}

	cancel()
	if err := <-waited; err == nil {
		t.Error("the cancelled Lock returned a lease")
	}
	for _, l := range leases {
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	admin.Del(ctx, foreign...)
	if got, err := c.List(ctx, ""); err != nil || len(got) != 0 {
		t.Errorf("List after every unlock = %q, %v; want none", listNames(got), err)
	}
}

// TestRedlockList: a Redlock lists a lock a majority holds, with the Status
// that Status gives, and not a key that only a minority keeps (which
// Status does not call held either).
func TestRedlockList(t *testing.T) {
	addrs := testserver.Redis(t)
	if len(addrs) < 3 {
		t.Skipf("%d Redis servers, want 3", len(addrs))
	}
	ctx := context.Background()
	base := uniqueName(t) + "/"
	c := redlockClient(t, addrs[:3])
	l, err := c.Mutex(base + "held").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	minority := (&Driver{prefix: DefaultPrefix}).keysOf(base + "minority").lock
	admin := adminClient(t, addrs[0])
	if err := admin.Set(ctx, minority, "someone", 10*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Del(context.Background(), minority) })
	got, err := c.List(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, base+"held")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != base+"held" {
		t.Fatalf("List = %+v, want %q only", got, base+"held")
	}
	if got[0].Status.TTLLeft <= 0 || !got[0].Status.Held || got[0].Status.Token != l.Token() {
		t.Errorf("listed as %+v, want held by token %d", got[0].Status, l.Token())
	}
	got[0].Status.TTLLeft, st.TTLLeft = 0, 0
	if got[0].Status != st {
		t.Errorf("listed as %+v, Status = %+v", got[0].Status, st)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := c.List(ctx, base); err != nil || len(got) != 0 {
		t.Errorf("List after Unlock = %+v, %v; want none", got, err)
	}
}

// TestRedlockListQuorum: a Redlock lists while a majority of its nodes
// answer, and fails with ErrUnavailable when they do not.
func TestRedlockListQuorum(t *testing.T) {
	procs, addrs := startNodes(t, 3)
	ctx := context.Background()
	c := redlockClient(t, addrs, dlock.WithTTL(10*time.Second))
	name := uniqueName(t)
	l, err := c.Mutex(name).TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	procs[2].Stop()
	got, err := c.List(ctx, "")
	if err != nil || len(got) != 1 || got[0].Name != name || got[0].Status.Token != l.Token() {
		t.Errorf("List with 2 of 3 nodes = %+v, %v; want %q held by token %d", got, err, name, l.Token())
	}
	procs[1].Stop()
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if got, err := c.List(tctx, ""); !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("List with 1 of 3 nodes = %+v, %v; want ErrUnavailable", got, err)
	}
	if err := l.Unlock(ctx); err == nil {
		t.Error("Unlock with 1 of 3 nodes succeeded")
	}
}
