// Package testlog records what a dlock client logs (dlock.WithLogger), for
// tests that read it back.
package testlog

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// The messages a client logs when a driver tells it of its engine
// connection (driver.ConnNotifier).
const (
	ConnLost     = "dlock: engine connection lost"
	ConnRestored = "dlock: engine connection restored"
)

// Recorder is an slog.Handler that keeps each record as one line: its
// message, then " key=value" for each attribute.
type Recorder struct {
	mu    sync.Mutex
	lines []string
	added chan struct{} // buffered 1: signalled on each line
}

// New returns an empty Recorder.
func New() *Recorder { return &Recorder{added: make(chan struct{}, 1)} }

// Logger returns a logger that writes to r.
func (r *Recorder) Logger() *slog.Logger { return slog.New(r) }

func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, b.String())
	r.mu.Unlock()
	select {
	case r.added <- struct{}{}:
	default:
	}
	return nil
}

func (r *Recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *Recorder) WithGroup(string) slog.Handler      { return r }

// Lines returns every line logged so far, in order.
func (r *Recorder) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// Matching returns the lines logged so far that start with one of prefixes,
// in order.
func (r *Recorder) Matching(prefixes ...string) []string {
	var out []string
	for _, l := range r.Lines() {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// Await waits until n lines starting with prefix have been logged and
// returns the n-th; it fails t if they have not within 20 s.
func (r *Recorder) Await(t testing.TB, prefix string, n int) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if m := r.Matching(prefix); len(m) >= n {
			return m[n-1]
		}
		select {
		case <-r.added:
		case <-deadline:
			t.Fatalf("%d %q not logged within 20 s; logged: %q", n, prefix, r.Lines())
			return ""
		}
	}
}
