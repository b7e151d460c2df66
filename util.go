package dlock

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// wrap adds the lock name and the operation to an engine error, leaving
// sentinel and context errors matchable.
func wrap(name, op string, err error) error {
	if err == nil {
		return nil
	}
	if strings.HasPrefix(err.Error(), "dlock: ") || strings.HasPrefix(err.Error(), "lock ") {
		return fmt.Errorf("%s %q: %w", op, name, err)
	}
	return fmt.Errorf("dlock: %s %q: %w", op, name, err)
}

// redact hides a password in a URL that url.Parse could not parse.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	// Fall back to dropping anything that looks like user info.
	for i := 0; i+2 < len(raw); i++ {
		if raw[i] == ':' && raw[i+1] == '/' && raw[i+2] == '/' {
			rest := raw[i+3:]
			for j := 0; j < len(rest) && rest[j] != '/'; j++ {
				if rest[j] == '@' {
					return raw[:i+3] + "xxxxx@" + rest[j+1:]
				}
			}
			break
		}
	}
	return raw
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func isEnded(err error) bool {
	return errors.Is(err, ErrNotHeld) || errors.Is(err, ErrLockLost) || errors.Is(err, ErrClosed)
}
