package dlock

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
)

// redact hides what may be a credential in a URL: the password (or the
// whole user info of a URL that does not parse) and the values of query
// parameters whose names suggest a secret.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return redactURL(u)
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "(a malformed URL)"
	}
	// The user info ends at the last '@': a password may hold '/' or '@'.
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = "xxxxx@" + rest[i+1:]
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest = rest[:i] + "?…"
	}
	return scheme + "://" + rest
}

func redactURL(u *url.URL) string {
	q := u.Query()
	masked := false
	for k := range q {
		if secretParam(k) {
			q.Set(k, "xxxxx")
			masked = true
		}
	}
	if masked {
		c := *u
		c.RawQuery = q.Encode()
		u = &c
	}
	return u.Redacted()
}

func secretParam(k string) bool {
	k = strings.ToLower(k)
	for _, s := range []string{"pass", "secret", "token", "auth", "key", "cred"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// secrets lists the strings of u that must never appear in a message.
func secrets(u *url.URL) []string {
	var s []string
	if pw, ok := u.User.Password(); ok && pw != "" {
		s = append(s, pw, url.PathEscape(pw), url.QueryEscape(pw))
	}
	for k, vs := range u.Query() {
		if secretParam(k) {
			for _, v := range vs {
				if v != "" {
					s = append(s, v, url.QueryEscape(v))
				}
			}
		}
	}
	return s
}

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
