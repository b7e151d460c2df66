package filelock

import (
	"context"
	"fmt"
	"net/url"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

func init() {
	dlock.Register("file", func(_ context.Context, u *url.URL) (driver.Driver, error) {
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("%w: file URL %q: host %q: want file:///absolute/dir or file://", dlock.ErrInvalidArgument, u.Redacted(), u.Host)
		}
		if u.Opaque != "" {
			return nil, fmt.Errorf("%w: file URL %q: want file:///absolute/dir or file://", dlock.ErrInvalidArgument, u.Redacted())
		}
		if u.RawQuery != "" {
			return nil, fmt.Errorf("%w: file URL %q: takes no query parameters", dlock.ErrInvalidArgument, u.Redacted())
		}
		return open(u.Path)
	})
}
