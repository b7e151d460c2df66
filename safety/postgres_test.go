package safety

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dlockio/dlock/internal/testserver"
	"github.com/dlockio/dlock/pglock"
)

// pgEngine starts a dedicated PostgreSQL server. The TTL is each holding
// session's idle_session_timeout: a holder that stops renewing (a paused
// worker) is cut off by the server after it, so a pause lets a second
// holder in. A restart is a fast shutdown (SIGINT), a crash a kill -9 of the
// postmaster (the server recovers from its WAL when started again). A
// session that ends (a restart, a crash, pg_terminate_backend, a reset
// connection) frees its locks at once and its holder learns it: the lease
// ends before its time, and the driver keeps the next holder out until
// then (earlyLoss).
func pgEngine(t *testing.T) *engine {
	const ttl = time.Second
	p := testserver.StartPostgres(t)
	base, err := url.Parse(testserver.PostgresURL(p))
	if err != nil {
		t.Fatal(err)
	}
	e := &engine{name: "postgres", ttl: ttl, expires: true, earlyLoss: true, servers: []*testserver.Proc{p}}
	e.urlFor = func(hosts []string) string {
		u := *base
		u.Host = hosts[0]
		return u.String()
	}
	e.restart = func(p *testserver.Proc) { testserver.RestartPostgres(t, p) }
	e.terminate = func(ctx context.Context, name string) (int, error) {
		conn, err := pgx.Connect(ctx, testserver.PostgresURL(p))
		if err != nil {
			return 0, err
		}
		defer conn.Close(context.Background())
		key := pglock.Key(name)
		var n int
		err = conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND classid::bigint = $1 AND objid::bigint = $2`,
			int64(uint64(key)>>32), int64(uint32(key))).Scan(&n)
		return n, err
	}
	return e
}

// injectServerKills kills each server with SIGKILL (kill -9: no shutdown,
// no goodbye to the clients) and starts it again after half a TTL.
func injectServerKills(ctx context.Context, s *scenario) {
	for i := 0; sleepCtx(ctx, s.ttl); i++ {
		s.eng.serverFault.Lock()
		func() {
			defer s.eng.serverFault.Unlock() // also if Start or settle fails the test
			if ctx.Err() != nil {
				return // the run ended while another run's fault went on
			}
			srv := s.eng.servers[i%len(s.eng.servers)]
			srv.Kill()
			s.fault("server-kill")
			sleepCtx(context.Background(), s.ttl/2)
			if s.eng.restart != nil {
				s.eng.restart(srv)
			} else {
				srv.Start()
			}
			if s.eng.settle != nil {
				s.eng.settle(s.t, srv)
			}
		}()
	}
}

// injectTerminations ends the holder's server session behind its back, as
// an operator's pg_terminate_backend would: the server frees the lock at
// once, the holder learns it when the message reaches it.
func injectTerminations(ctx context.Context, s *scenario) {
	for sleepCtx(ctx, s.ttl/2) {
		if _, ok := s.nextHolder(ctx); !ok {
			return
		}
		n, err := s.eng.terminate(ctx, s.lock)
		if err != nil {
			if ctx.Err() == nil {
				s.t.Errorf("terminating the holder's session: %v", err)
			}
			return
		}
		if n > 0 {
			s.fault("terminate-holder")
		}
	}
}
