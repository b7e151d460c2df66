package filelock

import (
	"context"
	"os"
	"slices"
	"sync"

	"github.com/dlockio/dlock/driver"
)

// The clients of one process that use one directory share its tokens file:
// one open file, which they take turns with (a channel of one slot). Only
// the client whose turn it is polls the file's flock (flockCtx) against
// other processes, so clients of one process never back off from each
// other, where separate open files would each poll, sleeping up to 10 ms
// between tries. A grant that finds the turn taken joins the queue and
// waits; the client in turn, once it has the flock, counts its own grant
// and every grant queued by then with one read and one write of the file,
// and ends their waits. A client waiting in the queue still stops
// at its ctx and at its driver's Close; one whose grant is being counted
// waits for that (a read and a write, at times a sync) to end.
type tokensShare struct {
	turn chan struct{} // full while a client uses the fields below
	refs int           // drivers sharing it; tokenShares.mu

	mu    sync.Mutex
	queue []*bumpReq // grants waiting to be counted, in arrival order; mu

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

// bumpReq is a grant waiting to be counted in the tokens file.
type bumpReq struct {
	f     *os.File // a shared holder's lock file, read and written in the batch; nil for an exclusive one
	floor uint64   // an exclusive holder's lock file's count
	taken bool     // in a batch: its result comes (tokensShare.mu)

	size int // f's text's length, read in the batch
	tok  uint64
	err  error
	done chan struct{} // closed once tok and err are set by the client in turn
}

// takeTurnOrResult waits until r, queued, is counted by the client in
// turn (false), or it is r's turn (true: the caller counts the queue, and
// gives the turn up). It stops at ctx and at d's Close unless r is being
// counted, whose end it then waits for.
func (d *fileDriver) takeTurnOrResult(ctx context.Context, r *bumpReq) (bool, error) {
	s := d.tok
	select {
	case <-r.done:
		return false, nil
	case s.turn <- struct{}{}:
		return true, nil
	default:
	}
	var stop error
	select {
	case <-r.done:
		return false, nil
	case s.turn <- struct{}{}:
		return true, nil
	case <-ctx.Done():
		stop = ctx.Err()
	case <-d.closing:
		stop = driver.ErrClosed
	}
	for {
		s.mu.Lock()
		taken := r.taken
		if !taken {
			s.queue = slices.DeleteFunc(s.queue, func(q *bumpReq) bool { return q == r })
		}
		s.mu.Unlock()
		if !taken {
			return false, stop
		}
		select {
		case <-r.done:
			return false, nil
		case s.turn <- struct{}{}:
			// The batch that took r has ended (r.done is closed) or put
			// r back (the tokens file was replaced): look again.
			d.giveTurn()
		}
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
