package bench

import (
	"context"
	"database/sql"
	"errors"

	cpglock "cirello.io/pglock"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/lib/pq" // cirello.io/pglock asks for lib/pq

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
	"github.com/dlockio/dlock/pglock"
)

// PGEngine is what the PostgreSQL lock contenders share in one benchmark
// process: the pgx pool of Engines.PG (dlock's driver, the counter) and a
// database/sql handle on lib/pq (cirello.io/pglock's documented setup).
type PGEngine struct {
	URL  string
	Pool *pgxpool.Pool
	DB   *sql.DB
}

// NewPGEngine opens the database/sql handle beside pool, on url.
func NewPGEngine(ctx context.Context, pool *pgxpool.Pool, url string) (*PGEngine, error) {
	db, err := sql.Open("postgres", url)
	if err != nil {
		return nil, errors.New("bad DLOCK_TEST_PG URL") // the driver's error may quote the password
	}
	db.SetMaxOpenConns(64)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return &PGEngine{URL: url, Pool: pool, DB: db}, nil
}

// Close closes the database handle (the pool is Engines.PG's).
func (e *PGEngine) Close() error { return e.DB.Close() }

// contenders are the floor, the peer and dlock, and the family.
func (e *PGEngine) contenders() ([]Contender, Family) {
	return append([]Contender{e.Floor(), e.Cirello()}, dlockPostgres(e)...), e.Family()
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
