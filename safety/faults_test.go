package safety

import (
	"context"
	"time"

	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/safety/internal/check"
)

// The fault injectors the scenarios name.

// monoDeadline converts a check.Now() instant to a wall deadline.
func monoDeadline(at int64) time.Time { return time.Now().Add(time.Duration(at - check.Now())) }

// sleepCtx waits d or until ctx ends; it reports whether d passed. The
// waits it makes are the lengths of fault schedules, not synchronisation.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// injectPauses pauses a writer (a holder between its check of Done and its
// write; for the other workloads, see scenario.pausePoint) for 2.5 TTLs,
// every few TTLs.
func injectPauses(ctx context.Context, s *scenario) {
	for sleepCtx(ctx, s.ttl/2) {
		if !s.pauseNextWriter(ctx, 5*s.ttl/2) {
			return
		}
		sleepCtx(ctx, s.ttl)
	}
}

// injectKills SIGKILLs the holder (or a waiter, one that does not hold the
// lock at that moment) and starts a fresh worker in its place.
func injectKills(holder bool) func(ctx context.Context, s *scenario) {
	return func(ctx context.Context, s *scenario) {
		kind := "sigkill-waiter"
		if holder {
			kind = "sigkill-holder"
		}
		for sleepCtx(ctx, s.ttl/2) {
			id, ok := s.nextHolder(ctx)
			if !ok {
				return
			}
			s.mu.Lock()
			victim := s.procs[id]
			if !holder {
				victim = nil
				for vid, p := range s.procs {
					if vid != id {
						victim = p
						break
					}
				}
			}
			s.mu.Unlock()
			if victim == nil {
				continue
			}
			s.kill(victim, kind)
			s.startProc()
		}
	}
}

// injectRestarts stops one server at a time (the leader, where there is
// one) and starts it again after half a TTL. Redis runs with AOF and fsync
// always, so a restarted node keeps its keys.
func injectRestarts(ctx context.Context, s *scenario) {
	for i := 0; sleepCtx(ctx, s.ttl); i++ {
		s.eng.serverFault.Lock()
		srv := s.eng.servers[i%len(s.eng.servers)]
		if s.eng.victim != nil {
			srv = s.eng.victim(i)
		}
		srv.Stop()
		s.fault("server-restart")
		sleepCtx(context.Background(), s.ttl/2)
		srv.Start()
		if s.eng.settle != nil {
			s.eng.settle(srv)
		}
		s.eng.serverFault.Unlock()
	}
}

// injectIsolation waits for a holder whose only server is the leader (or a
// follower), cuts that server off from the other servers for 3 TTLs while
// its clients keep their path to it, heals, and waits until every server
// serves again. The holder is still in its 1.5 TTL of work when the cut
// comes: its lease must end before the other side grants the lock.
//
// One server is cut at a time on an engine (engine.serverFault): a round
// is skipped while another run's cut or restart is on. Two runs side by
// side used to cut two servers of three at once, which is a fault of its
// own (no quorum, then elections that interrupt a rejoining server's
// sync), and on ZooKeeper 3.8.0 it makes the ensemble drop transactions
// it had committed (zklock/rollback_test.go): no lock on top can be safe
// then, whatever its client does.
func injectIsolation(leader bool) func(ctx context.Context, s *scenario) {
	kind := "isolate-follower"
	if leader {
		kind = "isolate-leader"
	}
	return func(ctx context.Context, s *scenario) {
		for sleepCtx(ctx, s.ttl/2) {
			id, ok := s.nextHolder(ctx)
			if !ok {
				return
			}
			if !s.eng.serverFault.TryLock() {
				continue
			}
			srv := s.serverOf(id)
			if srv == nil || s.eng.isLeader(srv) != leader {
				s.eng.serverFault.Unlock()
				continue
			}
			s.eng.net.Isolate(srv)
			s.fault(kind)
			sleepCtx(ctx, 3*s.ttl)
			s.eng.net.Heal(srv)
			s.eng.settle(srv)
			s.eng.serverFault.Unlock()
		}
	}
}

// injectSlowNotifications delays what the server sends on every worker's
// pub/sub connection (a Redis client's one connection for all of its
// waiters' release notifications) by half a TTL, for the whole run, so that
// grants and wake-ups arrive after the waiters' own attempts: the class of
// a late message acting on a lock that has moved on.
func injectSlowNotifications(ctx context.Context, s *scenario) {
	s.mu.Lock()
	var pxs []*proxy
	for _, p := range s.procs {
		pxs = append(pxs, p.proxies...)
	}
	for _, ps := range s.inProxies {
		pxs = append(pxs, ps...)
	}
	s.mu.Unlock()
	s.fault("slow-notifications")
	for _, px := range pxs {
		defer px.Add(faultproxy.Sent("subscribe"), faultproxy.Fault{Delay: s.ttl / 2, Dir: faultproxy.Down})()
	}
	<-ctx.Done()
}

// injectProxy cuts off, slows down or resets the current holder's
// connections for two TTLs at a time.
func injectProxy(kind string) func(ctx context.Context, s *scenario) {
	return func(ctx context.Context, s *scenario) {
		for sleepCtx(ctx, s.ttl/2) {
			id, ok := s.nextHolder(ctx)
			if !ok {
				return
			}
			pxs := s.proxiesOf(id)
			if len(pxs) == 0 {
				continue
			}
			s.fault(kind)
			switch kind {
			case "partition":
				for _, px := range pxs {
					px.Partition()
				}
				sleepCtx(ctx, 2*s.ttl)
				for _, px := range pxs {
					px.Heal()
				}
			case "latency":
				for _, px := range pxs {
					px.SetLatency(s.ttl / 3)
				}
				sleepCtx(ctx, 2*s.ttl)
				for _, px := range pxs {
					px.SetLatency(0)
				}
			case "reset":
				for _, px := range pxs {
					px.Reset()
				}
			}
		}
	}
}
