package filelock

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

// valueMask is what an observer's watch on a leader file asks of the
// kernel: a holder writing its text (a grant, SetValue) or closing it
// (giving the lock up, dying). Observers open leader files read-only and
// only read them (IN_CLOSE_NOWRITE, IN_ACCESS), so they never wake each
// other, nor themselves.
const valueMask = unix.IN_MODIFY | unix.IN_CLOSE_WRITE

// observer is an Observe call: it looks at the leader file again whenever
// its directory entry is made, replaced or removed (the driver's watch on
// the directory), or a holder writes or closes the file it found.
type observer struct {
	d     *fileDriver
	vname string             // the leader file's name
	out   chan driver.Holder // capacity 1: the latest holder, never a backlog
	wake  chan struct{}      // capacity 1
	vsub  *sub               // the watch on the leader file found last
}

// Observe sends name's exclusive holder now, then after every change, as
// its leader file shows it (see valueName). It wakes on inotify events
// only: the leader file made, removed or replaced, written or closed by a
// holder. It keeps the directory the driver opened: once that is removed
// or moved, it reports nobody and sees no more changes until ctx ends or
// the driver is closed (a client has to be opened again then, as for
// Lock).
func (d *fileDriver) Observe(ctx context.Context, name string) (<-chan driver.Holder, error) {
	if err := d.begin(); err != nil {
		return nil, err
	}
	o := &observer{
		d:     d,
		vname: valueName(fileName(name)),
		out:   make(chan driver.Holder, 1),
		wake:  make(chan struct{}, 1),
	}
	o.vsub = &sub{mask: valueMask, ch: o.wake}
	stopDir, err := d.ino.watchFile(d.dirf, &sub{mask: obsDirMask, fn: func(entry string) {
		if entry == "" || entry == o.vname {
			o.poke()
		}
	}})
	if err != nil {
		d.calls.Done()
		return nil, observeErr(d.dir, err)
	}
	go o.run(ctx, stopDir)
	return o.out, nil
}

// observerLooks counts the looks of all observers: tests check that an
// observer looks only when woken by an event.
var observerLooks atomic.Int64

func observeErr(dir string, err error) error {
	switch {
	case errors.Is(err, driver.ErrClosed):
		return err
	case isLimit(err):
		return driver.Unavailable(fmt.Errorf("filelock: cannot observe %s: %w", dir, err))
	}
	return fmt.Errorf("filelock: cannot observe %s: %w", dir, err)
}

func (o *observer) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *observer) run(ctx context.Context, stopDir func()) {
	defer o.d.calls.Done()
	defer close(o.out)
	defer stopDir()
	var stopVal func()
	defer func() {
		if stopVal != nil {
			stopVal()
		}
	}()
	var (
		last    driver.Holder
		sent    bool
		timer   = time.NewTimer(time.Hour)
		backoff = 50 * time.Millisecond
		again   = 0 // looks again at a holder unchanged after a wake-up
	)
	timer.Stop()
	defer timer.Stop()
	for {
		if o.d.ino.stopped() != nil {
			return // the driver is closed (or inotify failed: no event would come)
		}
		var (
			h   driver.Holder
			err error
			in  time.Duration // when to look again without an event; 0: never
		)
		h, stopVal, err = o.look(ctx, stopVal)
		switch {
		case err != nil:
			// A limit of this host (open files, inotify watches) that may
			// pass: look again after a while, or at the next event.
			in = backoff
			backoff = min(2*backoff, 5*time.Second)
		case sent && h == last && h.Token != 0 && again < len(recheck):
			// Woken, and the holder is still marked: the kernel tells
			// observers of a dying holder's close before it drops the
			// holder's locks, so look again shortly, a few times.
			in = recheck[again]
			again++
		default:
			backoff = 50 * time.Millisecond
			if !sent || h != last {
				again = 0
				select {
				case <-o.out: // not read yet: replaced by the latest
				default:
				}
				o.out <- h // we are the only sender: there is room
				last, sent = h, true
			}
		}
		var timeout <-chan time.Time
		if in > 0 {
			timer.Reset(in)
			timeout = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
			again = 0
		case <-timeout:
		}
		timer.Stop() // Go 1.23 timers: no stale tick left to drain
	}
}

// recheck is when an observer looks again at a holder it found unchanged
// after a wake-up (see run).
var recheck = [...]time.Duration{time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond}

// look reads the holder from the leader file at the name now, watching
// that file first (stop ends the watch on the one found before): anything
// its holder does after the read wakes the observer.
func (o *observer) look(ctx context.Context, stop func()) (driver.Holder, func(), error) {
	observerLooks.Add(1)
	if stop != nil {
		stop()
	}
	if same, err := o.d.dirAt(); err != nil || !same {
		return driver.Holder{}, nil, err // moved or removed: nobody holds there
	}
	f, err := o.d.openValue(o.vname)
	if err != nil || f == nil {
		return driver.Holder{}, nil, err
	}
	defer f.Close()
	stop, err = o.d.ino.watchFile(f, o.vsub)
	if err != nil {
		return driver.Holder{}, nil, observeErr(o.d.dir, err)
	}
	h, err := o.d.readHolder(ctx, f)
	return h, stop, err
}
