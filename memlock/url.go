package memlock

import (
	"context"
	"fmt"
	"net/url"
	"sync"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

func init() {
	dlock.Register("mem", func(_ context.Context, u *url.URL) (driver.Driver, error) {
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("%w: mem URL %q: want mem:// or mem://NAME", dlock.ErrInvalidArgument, u.Redacted())
		}
		return named(u.Host).newConn(), nil
	})
}

var (
	enginesMu sync.Mutex
	engines   = map[string]*Engine{}
)

func named(name string) *Engine {
	enginesMu.Lock()
	defer enginesMu.Unlock()
	e := engines[name]
	if e == nil {
		e = NewEngine()
		engines[name] = e
	}
	return e
}
