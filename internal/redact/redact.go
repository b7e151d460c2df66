// Package redact hides what may be a credential in an engine URL before it
// goes into a message: the password (or the whole user info of a URL that
// does not parse) and the values of query parameters whose names suggest a
// secret. The root package (Open's errors) and the dlock command (its
// messages) use it, so a URL reads the same wherever it is printed.
package redact

import (
	"net/url"
	"strings"
)

// String redacts a raw URL, parsed or not. A URL with nothing to hide
// comes back as given ("file://", where url.URL would print "file:").
func String(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		if len(Secrets(u)) == 0 && !hasPassword(u) && validQuery(u) {
			return raw
		}
		return URL(u)
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

// URL redacts a parsed URL. A query that does not parse is left out
// ("?…"): its secrets could not be told.
func URL(u *url.URL) string {
	if !validQuery(u) {
		c := *u
		c.RawQuery = ""
		return c.Redacted() + "?…"
	}
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

func validQuery(u *url.URL) bool {
	_, err := url.ParseQuery(u.RawQuery)
	return err == nil
}

func hasPassword(u *url.URL) bool {
	_, ok := u.User.Password()
	return ok
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

// Secrets lists the strings of u that must never appear in a message, as
// given and in their escaped forms.
func Secrets(u *url.URL) []string {
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

// Password is s with every occurrence of password replaced, for a message
// a client library may have built from its configuration (an address with
// user info, an authentication error); s itself if password is "".
func Password(s, password string) string {
	if password == "" {
		return s
	}
	return strings.ReplaceAll(s, password, "xxxxx")
}
