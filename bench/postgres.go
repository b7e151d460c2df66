package bench

import (
	"context"
	"database/sql"
	"os"

	cpglock "cirello.io/pglock"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/lib/pq" // cirello.io/pglock asks for lib/pq

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
	"github.com/dlockio/dlock/pglock"
)

// PGURL is the shared PostgreSQL server (scripts/services.sh up).
func PGURL() string {
	if u := os.Getenv("DLOCK_TEST_PG"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:15432/postgres?sslmode=disable"
}

// PGEngine is the shared PostgreSQL connections of one benchmark process: a
// pgx pool (dlock's driver, the counter) and a database/sql handle on
// lib/pq (cirello.io/pglock's documented setup).
type PGEngine struct {
	URL  string
	Pool *pgxpool.Pool
	DB   *sql.DB
}

// NewPGEngine connects to url.
func NewPGEngine(ctx context.Context, url string) (*PGEngine, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = 64 // 50 workers' counters, as for Redis's pool
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	e := &PGEngine{URL: url, Pool: pool}
	if err := pool.Ping(ctx); err != nil {
		e.Close()
		return nil, err
	}
	if e.DB, err = sql.Open("postgres", url); err != nil {
		e.Close()
		return nil, err
	}
	e.DB.SetMaxOpenConns(64)
	if err := e.DB.PingContext(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Close closes the pool and the database handle.
func (e *PGEngine) Close() error {
	var err error
	if e.DB != nil {
		err = e.DB.Close()
	}
	e.Pool.Close()
	return err
}

// Family is PostgreSQL's: the counter is a row (engines.Postgres); commands
// are not counted.
func (e *PGEngine) Family() Family {
	return Family{Name: "postgres", Counter: engines.Postgres(e.Pool)}
}

// Floor is pg_advisory_lock + pg_advisory_unlock on a connection of each
// worker's own: the least any advisory lock can do, and a real waiting
// primitive (the server queues and wakes waiters), so it runs the contended
// scenarios too.
func (e *PGEngine) Floor() Contender {
	return Contender{
		Name: "floor-postgres", Family: "postgres", Kind: Floor,
		Note: "pg_advisory_lock + pg_advisory_unlock, a connection per worker; no token, no lease",
		NewWorker: func(ctx context.Context) (scenario.Locker, error) {
			conn, err := pgx.Connect(ctx, e.URL)
			if err != nil {
				return nil, err
			}
			return peer{
				lock: func(ctx context.Context, name string) (func(context.Context) error, error) {
					key := pglock.Key(name)
					if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
						return nil, err
					}
					return func(ctx context.Context) error {
						_, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", key)
						return err
					}, nil
				},
				close: func() error { return conn.Close(context.Background()) },
			}, nil
		},
	}
}

// Cirello is cirello.io/pglock at its documented defaults (a lease of 20 s,
// a heartbeat every 5 s): a client per worker (an owner each) on the shared
// database handle. A lock taken is retried after sleeping a lease period.
func (e *PGEngine) Cirello() Contender {
	return Contender{
		Name: "cirello-pglock", Family: "postgres", Kind: Peer,
		Note: "cirello.io/pglock.New(db) per worker, defaults: lease 20 s, heartbeat 5 s, a taken lock retried after a lease period",
		NewWorker: func(ctx context.Context) (scenario.Locker, error) {
			c, err := cpglock.New(e.DB)
			if err != nil {
				return nil, err
			}
			if err := c.TryCreateTable(); err != nil {
				return nil, err
			}
			return peer{lock: func(ctx context.Context, name string) (func(context.Context) error, error) {
				l, err := c.AcquireContext(ctx, name)
				if err != nil {
					return nil, err
				}
				return func(ctx context.Context) error { return c.ReleaseContext(ctx, l) }, nil
			}}, nil
		},
	}
}

func dlockPostgres(e *PGEngine) []Contender {
	return []Contender{dlockContender("dlock-postgres", "postgres", "pglock.New(pool) per worker on the shared pgx pool, defaults",
		func() (*dlock.Client, error) { return pglock.New(e.Pool, nil) })}
}
