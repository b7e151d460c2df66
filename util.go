package dlock

import (
	"errors"
	"net/url"
	"regexp"
	"strings"

	urlredact "github.com/dlockio/dlock/internal/redact"
)

// The URL redaction is shared with the dlock command (internal/redact).
var (
	redact    = urlredact.String
	redactURL = urlredact.URL
	secrets   = urlredact.Secrets
)

// scrubbed is an error whose message has the secrets of a URL masked; it
// still matches what the original matches.
type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

func scrub(err error, secrets []string) error {
	if err == nil || len(secrets) == 0 {
		return err
	}
	msg := err.Error()
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	if msg == err.Error() {
		return err
	}
	return &scrubbed{msg, err}
}

// quoted matches the quoted fragments that url.Parse puts in its errors,
// which may be pieces of a password.
var quoted = regexp.MustCompile(`\s*"[^"]*"`)

// parseProblem says what is wrong with a URL without quoting any of it.
func parseProblem(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return quoted.ReplaceAllString(err.Error(), "") +
		" (percent-encode '/', '?', '#', '@' and '%' in a user name or password)"
}

func isEnded(err error) bool {
	return errors.Is(err, ErrNotHeld) || errors.Is(err, ErrLockLost) || errors.Is(err, ErrClosed)
}
