package filelock

import (
	"context"
	"errors"
	"testing"

	"github.com/dlockio/dlock"
)

func TestBadURL(t *testing.T) {
	for _, u := range []string{"file://host/x", "file:///x?ttl=1", "file:relative"} {
		if _, err := dlock.Open(context.Background(), u); err == nil {
			t.Errorf("Open(%q) succeeded, want an error", u)
		} else if !errors.Is(err, dlock.ErrInvalidArgument) {
			t.Errorf("Open(%q) = %v, want ErrInvalidArgument", u, err)
		}
	}
}
