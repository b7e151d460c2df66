package memlock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

func TestBadURL(t *testing.T) {
	for _, u := range []string{"mem://x/y", "mem://x?ttl=1", "mem://user:pw@x"} {
		if _, err := dlock.Open(context.Background(), u); !errors.Is(err, dlock.ErrInvalidArgument) {
			t.Errorf("Open(%q) = %v, want ErrInvalidArgument", u, err)
		}
	}
}

// TestClosedConn: a closed (or crashed) connection answers driver.ErrClosed.
func TestClosedConn(t *testing.T) {
	ctx := context.Background()
	for _, cut := range []func(*conn) error{(*conn).Close, func(c *conn) error { c.crash(); return nil }} {
		c := NewEngine().newConn()
		if err := cut(c); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Acquire(ctx, driver.Request{Name: "x", TTL: time.Second}); !errors.Is(err, driver.ErrClosed) {
			t.Errorf("Acquire on a cut connection = %v, want ErrClosed", err)
		}
		if _, err := c.Status(ctx, "x"); !errors.Is(err, driver.ErrClosed) {
			t.Errorf("Status on a cut connection = %v, want ErrClosed", err)
		}
	}
	c := NewEngine().newConn()
	c.Close()
	if err := c.Close(); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
}
