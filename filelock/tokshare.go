package filelock

import (
	"context"
	"os"
	"sync"

	"github.com/dlockio/dlock/driver"
)

// The clients of one process that use one directory share its tokens file:
// one open file, which they take turns with, in the order they come (a
// channel of one slot). Only the client whose turn it is polls the file's
// flock (flockCtx) against other processes, so clients of one process
// never back off from each other: the next in line goes as soon as the
// last is done, where separate open files would each poll, sleeping up to
// 10 ms between tries. A waiting client still stops at its ctx and at its
// driver's Close.
type tokensShare struct {
	turn chan struct{} // full while a client uses the fields below
	refs int           // drivers sharing it; tokenShares.mu

	f       *os.File      // nil until opened, or once found replaced
	id      fileID        // f's
	gen     uint64        // counts opens: what a driver looked up is of one
	buf     [maxText]byte // the tokens file's text
	lockBuf [maxText]byte // a shared holder's lock file's text
}

var tokenShares = struct {
	mu sync.Mutex
	m  map[fileID]*tokensShare // by directory
}{m: map[fileID]*tokensShare{}}

// shareTokens returns the tokens file of the directory dir for one more
// driver; the driver gives it back with unshare.
func shareTokens(dir fileID) *tokensShare {
	tokenShares.mu.Lock()
	defer tokenShares.mu.Unlock()
	s := tokenShares.m[dir]
	if s == nil {
		s = &tokensShare{turn: make(chan struct{}, 1)}
		tokenShares.m[dir] = s
	}
	s.refs++
	return s
}

// unshare gives s back; the last driver closes the file. No call of the
// driver may be using it any more.
func (s *tokensShare) unshare(dir fileID) {
	tokenShares.mu.Lock()
	defer tokenShares.mu.Unlock()
	if s.refs--; s.refs > 0 {
		return
	}
	delete(tokenShares.m, dir)
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// takeTurn waits for d's turn with the tokens file; giveTurn ends it.
func (d *fileDriver) takeTurn(ctx context.Context) error {
	select {
	case d.tok.turn <- struct{}{}:
		return nil
	default:
	}
	select {
	case d.tok.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-d.closing:
		return driver.ErrClosed
	}
}

func (d *fileDriver) giveTurn() { <-d.tok.turn }
