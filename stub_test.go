package dlock_test

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlockio/dlock/driver"
)

// stub is a driver whose engine behaviour each test scripts: it tests what
// the portable layer does with what a driver reports (a hang, an error, a
// grant), which no real engine can be made to do on cue. Unset hooks grant
// at once and succeed.
type stub struct {
	acquire func(ctx context.Context, req driver.Request) error
	// validity, if set, says what a grant's validity is (default: from
	// now, for the TTL asked).
	validity func(req driver.Request) driver.Validity
	renew    func(ctx context.Context) error
	release  func(ctx context.Context) error
	close    func() error

	token    atomic.Uint64
	acquires atomic.Int32
	renews   atomic.Int32
	releases atomic.Int32

	mu       sync.Mutex
	renewing int  // renewals in flight
	overlap  bool // a Release ran while a Renew was in flight
}

func (s *stub) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	s.acquires.Add(1)
	if s.acquire != nil {
		if err := s.acquire(ctx, req); err != nil {
			return nil, driver.Validity{}, err
		}
	}
	v := driver.Validity{Since: time.Now(), TTL: req.TTL}
	if s.validity != nil {
		v = s.validity(req)
	}
	return &stubLock{s: s, token: s.token.Add(1), ttl: req.TTL}, v, nil
}

func (s *stub) Close() error {
	if s.close != nil {
		return s.close()
	}
	return nil
}

type stubLock struct {
	s     *stub
	token uint64
	ttl   time.Duration
}

func (l *stubLock) Token() uint64         { return l.token }
func (l *stubLock) Lost() <-chan struct{} { return nil }

func (l *stubLock) Renew(ctx context.Context) (driver.Validity, error) {
	s := l.s
	s.renews.Add(1)
	s.mu.Lock()
	s.renewing++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.renewing--
		s.mu.Unlock()
	}()
	since := time.Now()
	if s.renew != nil {
		if err := s.renew(ctx); err != nil {
			return driver.Validity{}, err
		}
	}
	return driver.Validity{Since: since, TTL: l.ttl}, nil
}

func (l *stubLock) Release(ctx context.Context) error {
	s := l.s
	s.releases.Add(1)
	s.mu.Lock()
	if s.renewing > 0 {
		s.overlap = true
	}
	s.mu.Unlock()
	if s.release != nil {
		return s.release(ctx)
	}
	return nil
}

func (s *stub) overlapped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.overlap
}
