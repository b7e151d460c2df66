package filelock

import (
	"context"
	"net/url"
	"strconv"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// Scheme is the URL scheme of this driver: file:///dir, or file:// for
// DefaultDir.
const Scheme = "file"

func init() {
	dlock.Register(Scheme, openURL)
}

// openURL opens "file:///dir", or "file://" for DefaultDir.
func openURL(_ context.Context, u *url.URL) (driver.Driver, error) {
	const want = "file:///absolute/dir, or file:// for the default directory"
	switch {
	case u.Host != "" && u.Host != "localhost":
		return nil, driver.InvalidArgument("filelock: URL host", strconv.Quote(u.Host), `none or "localhost": `+want)
	case u.Opaque != "":
		return nil, driver.InvalidArgument("filelock: URL path", strconv.Quote(u.Opaque), "an absolute path: "+want)
	case u.RawQuery != "":
		return nil, driver.InvalidArgument("filelock: URL query", strconv.Quote(u.RawQuery), "none: "+want)
	}
	return open(u.Path)
}
