package main

// The command's output when dlock's own is not a file (tests, a pipe
// dlock was given as an io.Writer), and writers safe for two goroutines.

import (
	"io"
	"os"
	"reflect"
	"sync"
	"time"
)

// outputCopy copies a command's output to a writer that is not a file.
type outputCopy struct {
	r    *os.File
	done chan struct{}
}

// childOutput returns the file the command writes w through: w itself if it
// is a file, else the write end of a pipe copied to w.
func childOutput(w io.Writer) (*os.File, *outputCopy, error) {
	if f, ok := w.(*os.File); ok {
		return f, nil, nil
	}
	r, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	c := &outputCopy{r: r, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		io.Copy(w, r)
	}()
	return pw, c, nil
}

// started closes dlock's copy of the pipe's write end once the child has its own.
func (c *outputCopy) started(w *os.File) {
	if c != nil {
		w.Close()
	}
}

// abort ends a copy whose command never started.
func (c *outputCopy) abort() {
	if c != nil {
		c.r.Close()
		<-c.done
	}
}

// wait waits for the copy to reach the end of the output, at most linger.
func (c *outputCopy) wait(linger time.Duration) {
	if c == nil {
		return
	}
	select {
	case <-c.done:
	case <-time.After(linger):
	}
	c.r.Close()
	<-c.done
}

// serialized returns writers safe for the copies of the command's output
// and dlock's own notices to share: writers that are not files (tests) get
// a lock, one for both if they are the same.
func serialized(stdout, stderr io.Writer) (io.Writer, io.Writer) {
	wrap := func(w io.Writer) io.Writer {
		if _, ok := w.(*os.File); ok {
			return w
		}
		return &lockedWriter{w: w}
	}
	if reflect.TypeOf(stdout).Comparable() && stdout == stderr {
		w := wrap(stdout)
		return w, w
	}
	return wrap(stdout), wrap(stderr)
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
