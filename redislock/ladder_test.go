package redislock

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/scenario"
)

// BenchmarkLadder splits the uncontended cycle's cost (issue 17) into
// steps, each one change from the one before, all on one go-redis client
// (PoolSize 128, as peerbench's) to one dedicated redis-server:
//
//   - floor: SET NX PX + DEL;
//   - floor-cad: SET NX PX + redsync's owner-checked Lua DEL (EVALSHA);
//   - lua3: EVALSHA of a mutex-only acquire (EXISTS, INCR, SET PX) and
//     release (GET, DEL, SET of the release note), 3 keys each: what a
//     script without the queue, the gone set, readers and observers costs;
//   - lua10: the same scripts sent with dlock's 10 keys (11 for the
//     release) and arguments, of which they read 3: what the keys cost on
//     the wire and in the server's parsing;
//   - raw: go-redis's EvalSha of dlock's own acquire.lua and release.lua
//     (single.lua included) with the driver's keys and arguments (10 and 11
//     keys, a fresh owner id per cycle), no driver code in the loop;
//   - driver: Driver.Acquire + Lock.Release (no lease);
//   - dlock: dlock.Client's Mutex Lock + Lease.Unlock, as peerbench's
//     dlock-redis does (scenario.Client);
//
// and off the ladder, a control: cad+slow is floor-cad whose release script
// first keeps the server busy ladderSlowMicros (a loop on TIME): the
// client's work is floor-cad's, the server's time per cycle about dlock's.
// What cad+slow loses against floor-cad is what the server's time costs
// the client's wall time (its threads sleep and are woken while waiting),
// whatever the scripts do.
//
// Each round runs one block of cycles of every step, in an order rotated
// by round, so that a load spike hits all steps alike. Per step it reports
// the median over rounds of cycles/s, and, over all rounds, the client's
// CPU per cycle (getrusage: user+system, every thread), the server's (INFO
// cpu), the server's time in the top-level commands (INFO commandstats
// usec: the scripts' EVALSHA, or SET and DEL) and the client's context
// switches per cycle (voluntary and not). -benchtime Nx is N rounds.
//
//	go test -run '^$' -bench Ladder -benchtime 7x ./redislock
func BenchmarkLadder(b *testing.B) {
	addr := benchServer(b)
	ctx := context.Background()
	admin := benchClient(b, addr)
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 128})
	b.Cleanup(func() { rdb.Close() })

	d, err := NewDriver(rdb, nil)
	if err != nil {
		b.Fatal(err)
	}
	c, err := dlock.NewClient(d)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	ours := scenario.Client(c)
	ttl := dlock.DefaultTTL

	for _, s := range []*script{ladderSlowCAD, ladderCAD, ladderAcquire3, ladderRelease3, ladderRelease10, acquireScript, releaseScript} {
		if err := rdb.ScriptLoad(ctx, s.src).Err(); err != nil {
			b.Fatal(err)
		}
	}
	// raw: the driver's keys and owner ids, made once by its code; the
	// loop only appends a sequence number.
	rawKeys := d.keysOf("ladder-raw")
	rawOwner := d.owner(driver.Exclusive, 0)
	rawOwner = rawOwner[:strings.IndexByte(rawOwner, '.')+1] // id.
	barge := ""
	if d.barge > 0 {
		barge = "~" + strconv.FormatInt(d.barge, 10)
	}
	ttlMs := strconv.FormatInt(ttlMillis(ttl), 10)
	var seq uint64
	lua3Keys := func(name string) []string {
		return []string{"dlock:{" + name + "}", "dlock:{" + name + "}:fence", "dlock:{" + name + "}:released:"}
	}
	l3 := lua3Keys("ladder-lua3")
	l10 := d.keysOf("ladder-lua10")

	type step struct {
		name  string
		top   []string // top-level commands, for the server's usec
		cycle func() error
		// per round: cycles/s; over all: client CPU, server CPU, server
		// usec in top-level commands, context switches (vol, invol), cycles
		rate       []float64
		cl, srv    time.Duration
		usec       float64
		vcsw, icsw int64
		wall       []time.Duration
		n          int
	}
	steps := []*step{
		{name: "floor", top: []string{"set", "del"}, cycle: func() error {
			if err := rdb.SetNX(ctx, "ladder-floor", "x", ttl).Err(); err != nil {
				return err
			}
			return rdb.Del(ctx, "ladder-floor").Err()
		}},
		{name: "floor-cad", top: []string{"set", "evalsha"}, cycle: func() error {
			seq++
			v := strconv.FormatUint(seq, 36)
			if err := rdb.SetNX(ctx, "ladder-cad", v, ttl).Err(); err != nil {
				return err
			}
			return rdb.EvalSha(ctx, ladderCAD.Hash(), []string{"ladder-cad"}, v).Err()
		}},
		{name: "lua3", top: []string{"evalsha"}, cycle: func() error {
			seq++
			o := rawOwner + strconv.FormatUint(seq, 36) + barge
			if err := rdb.EvalSha(ctx, ladderAcquire3.Hash(), l3, o, ttlMs).Err(); err != nil {
				return err
			}
			l3[2] = l3[0] + ":released:" + o
			n, err := rdb.EvalSha(ctx, ladderRelease3.Hash(), l3, o, ttlMs).Int64()
			if err == nil && n != 1 {
				err = fmt.Errorf("lua3 release: %d", n)
			}
			return err
		}},
		{name: "lua10", top: []string{"evalsha"}, cycle: func() error {
			seq++
			o := rawOwner + strconv.FormatUint(seq, 36) + barge
			if err := rdb.EvalSha(ctx, ladderAcquire3.Hash(), l10.single(), o, ttlMs, "", "").Err(); err != nil {
				return err
			}
			n, err := rdb.EvalSha(ctx, ladderRelease10.Hash(), l10.singleNoted(o), o, l10.channel, ttlMs, 0, 1).Int64()
			if err == nil && n != 1 {
				err = fmt.Errorf("lua10 release: %d", n)
			}
			return err
		}},
		{name: "raw", top: []string{"evalsha"}, cycle: func() error {
			seq++
			o := rawOwner + strconv.FormatUint(seq, 36) + barge
			v, err := rdb.EvalSha(ctx, acquireScript.Hash(), rawKeys.single(), o, ttlMs, "", "").Int64Slice()
			if err == nil && v[0] != 1 {
				err = fmt.Errorf("raw acquire: %v", v)
			}
			if err != nil {
				return err
			}
			n, err := rdb.EvalSha(ctx, releaseScript.Hash(), rawKeys.singleNoted(o), o, rawKeys.channel, ttlMs, 0, 1).Int64()
			if err == nil && n != 1 {
				err = fmt.Errorf("raw release: %d", n)
			}
			return err
		}},
		{name: "driver", top: []string{"evalsha"}, cycle: func() error {
			l, _, err := d.Acquire(ctx, driver.Request{Name: "ladder-driver", Mode: driver.Exclusive, TTL: ttl, Wait: true})
			if err != nil {
				return err
			}
			return l.Release(ctx)
		}},
		{name: "dlock", top: []string{"evalsha"}, cycle: func() error {
			return scenario.Cycle(ctx, ours, "ladder-dlock")
		}},
		{name: "cad+slow", top: []string{"set", "evalsha"}, cycle: func() error {
			seq++
			v := strconv.FormatUint(seq, 36)
			if err := rdb.SetNX(ctx, "ladder-slow", v, ttl).Err(); err != nil {
				return err
			}
			return rdb.EvalSha(ctx, ladderSlowCAD.Hash(), []string{"ladder-slow"}, v, ladderSlowMicros).Err()
		}},
	}
	for _, s := range steps { // scripts cached, connections made
		for range 50 {
			if err := s.cycle(); err != nil {
				b.Fatalf("%s: %v", s.name, err)
			}
		}
	}
	const block = 500
	round := 0
	for b.Loop() {
		for i := range steps {
			s := steps[(i+round)%len(steps)]
			srv0, us0 := serverCPU(b, admin), topUsec(b, admin, s.top)
			ru0 := rusage(b)
			t0 := time.Now()
			for range block {
				t := time.Now()
				if err := s.cycle(); err != nil {
					b.Fatalf("%s: %v", s.name, err)
				}
				s.wall = append(s.wall, time.Since(t))
			}
			el := time.Since(t0)
			ru1 := rusage(b)
			srv1, us1 := serverCPU(b, admin), topUsec(b, admin, s.top)
			s.rate = append(s.rate, block/el.Seconds())
			s.cl += time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			s.srv += srv1 - srv0
			s.usec += us1 - us0
			s.vcsw += ru1.Nvcsw - ru0.Nvcsw
			s.icsw += ru1.Nivcsw - ru0.Nivcsw
			s.n += block
		}
		round++
	}
	med := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	var lines []string
	lines = append(lines, fmt.Sprintf("%-10s %9s %7s %7s %8s %8s %8s %8s %7s %7s",
		fmt.Sprintf("%dx%d", round, block), "cycles/s", "xfloor", "xprev", "p50-µs", "cl-µs", "srv-µs", "cmd-µs", "vcsw", "icsw"))
	floorRate, prev := med(steps[0].rate), 0.0
	for _, s := range steps {
		r, n := med(s.rate), float64(s.n)
		xprev := 1.0
		if prev > 0 {
			xprev = r / prev
		}
		prev = r
		cl := float64(s.cl.Nanoseconds()) / 1e3 / n
		srv := float64(s.srv.Nanoseconds()) / 1e3 / n
		lines = append(lines, fmt.Sprintf("%-10s %9.0f %7.2f %7.2f %8.1f %8.1f %8.1f %8.1f %7.2f %7.2f",
			s.name, r, r/floorRate, xprev, float64(scenario.Median(s.wall).Nanoseconds())/1e3, cl, srv, s.usec/n,
			float64(s.vcsw)/n, float64(s.icsw)/n))
		b.ReportMetric(r, s.name+"-cycles/s")
		b.ReportMetric(cl, s.name+"-client-µs")
		b.ReportMetric(srv, s.name+"-server-µs")
	}
	b.ReportMetric(0, "ns/op")
	b.Log("\n" + strings.Join(lines, "\n"))
}

var (
	// ladderCAD is redsync's release: delete the key if it is the owner's.
	ladderCAD = newScript(`local val = redis.call("GET", KEYS[1])
if val == ARGV[1] then
	return redis.call("DEL", KEYS[1])
elseif val == false then
	return -1
else
	return 0
end`)
	// ladderSlowCAD is ladderCAD that keeps the server busy ARGV[2]
	// microseconds (TIME) first: the control of cad+slow.
	ladderSlowCAD = newScript(`local t = redis.call('TIME')
local s, d = t[1] * 1000000 + t[2], tonumber(ARGV[2])
repeat
	t = redis.call('TIME')
until t[1] * 1000000 + t[2] - s >= d
local val = redis.call("GET", KEYS[1])
if val == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)
	// ladderAcquire3 and ladderRelease3: a mutex-only pair of scripts
	// with 3 keys (lock, fence counter, release note): acquire.lua's and
	// release.lua's fast paths without the keys that guard the other
	// primitives.
	ladderAcquire3 = newScript(`if redis.call('EXISTS', KEYS[1]) == 0 then
	local token = redis.call('INCR', KEYS[2])
	redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
	return {1, token}
end
return {0, redis.call('PTTL', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}`)
	ladderRelease3 = newScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('DEL', KEYS[1])
	redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
	return 1
end
return 0`)
	// ladderRelease10 is ladderRelease3 with release.lua's keys and
	// arguments: the note is KEYS[11], the TTL ARGV[3].
	ladderRelease10 = newScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('DEL', KEYS[1])
	redis.call('SET', KEYS[11], '1', 'PX', ARGV[3])
	return 1
end
return 0`)
)

// ladderSlowMicros is how long cad+slow's release keeps the server busy:
// about what dlock's two scripts take beyond floor-cad's (INFO
// commandstats, BenchmarkLadder's cmd-µs).
const ladderSlowMicros = 12

// topUsec is the server's total time in the commands named (INFO
// commandstats usec).
func topUsec(b *testing.B, admin *redis.Client, names []string) float64 {
	stats := cmdStats(b, admin)
	var t float64
	for _, name := range names {
		t += stats[name].usec
	}
	return t
}
