package memlock

import (
	"context"
	"net/url"
	"strconv"
	"sync"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// Scheme is the URL scheme of this driver: mem://, or mem://NAME.
const Scheme = "mem"

func init() {
	dlock.Register(Scheme, openURL)
}

// openURL opens a client on the engine named by the URL's host ("" for the
// process-wide one).
func openURL(_ context.Context, u *url.URL) (driver.Driver, error) {
	const want = "none: mem:// or mem://NAME"
	switch {
	case u.Path != "" && u.Path != "/":
		return nil, driver.InvalidArgument("memlock: URL path", strconv.Quote(u.Path), want)
	case u.RawQuery != "":
		return nil, driver.InvalidArgument("memlock: URL query", strconv.Quote(u.RawQuery), want)
	case u.User != nil:
		return nil, driver.InvalidArgument("memlock: URL user information", "present", want)
	}
	return named(u.Host).newConn(), nil
}

// engines are the engines of mem://NAME URLs, by NAME.
var (
	enginesMu sync.Mutex
	engines   = map[string]*Engine{}
)

// named returns the engine called name, made on first use.
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
