package engines

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlockio/dlock/internal/scenario"
)

// pgDriver is what pglock exposes of its engine.
type pgDriver interface{ Pool() *pgxpool.Pool }

// Postgres keeps counters in rows of the table dlock_counters, made on
// first use.
func Postgres(pool *pgxpool.Pool) scenario.Counter { return pgCounter{pool} }

type pgCounter struct{ pool *pgxpool.Pool }

func (c pgCounter) Get(ctx context.Context, key string) (int64, error) {
	var v int64
	err := c.pool.QueryRow(ctx, `SELECT v FROM dlock_counters WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) || isUndefinedTable(err) {
		return 0, nil
	}
	return v, err
}

func (c pgCounter) Set(ctx context.Context, key string, v int64) error {
	const upsert = `INSERT INTO dlock_counters VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET v = excluded.v`
	_, err := c.pool.Exec(ctx, upsert, key, v)
	if isUndefinedTable(err) {
		if _, cerr := c.pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS dlock_counters (key text PRIMARY KEY, v bigint NOT NULL)`); cerr != nil {
			return cerr
		}
		_, err = c.pool.Exec(ctx, upsert, key, v)
	}
	return err
}

func (c pgCounter) Delete(ctx context.Context, key string) error {
	_, err := c.pool.Exec(ctx, `DELETE FROM dlock_counters WHERE key = $1`, key)
	if isUndefinedTable(err) {
		return nil
	}
	return err
}

func isUndefinedTable(err error) bool {
	var pe interface{ SQLState() string }
	return err != nil && errors.As(err, &pe) && pe.SQLState() == "42P01"
}
