package faultproxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo starts a line echo server.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func start(t *testing.T) *Proxy {
	t.Helper()
	p, err := Start(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, p *Proxy) *client {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c, bufio.NewReader(c)}
}

// roundTrip sends a line and returns how long its echo took.
func (c *client) roundTrip(t *testing.T, line string) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := c.c.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatalf("echo of %q: %v", line, err)
	}
	if got != line+"\n" {
		t.Fatalf("echo %q, want %q", got, line)
	}
	return time.Since(start)
}

func TestDelayOnlyMatchingConnection(t *testing.T) {
	p := start(t)
	slow, fast := dial(t, p), dial(t, p)
	slow.roundTrip(t, "SUBSCRIBE x")
	fast.roundTrip(t, "GET x")
	remove := p.Add(Sent("SUBSCRIBE"), Fault{Delay: 300 * time.Millisecond, Dir: Down})
	if d := slow.roundTrip(t, "a"); d < 300*time.Millisecond {
		t.Errorf("delayed connection answered in %v, want >= 300ms", d)
	}
	if d := fast.roundTrip(t, "b"); d > 200*time.Millisecond {
		t.Errorf("other connection answered in %v, want no delay", d)
	}
	remove()
	if d := slow.roundTrip(t, "c"); d > 200*time.Millisecond {
		t.Errorf("after removal: %v, want no delay", d)
	}
}

func TestDelayIsALatencyNotAThroughputLimit(t *testing.T) {
	p := start(t)
	c := dial(t, p)
	p.Add(Any, Fault{Delay: 200 * time.Millisecond, Dir: Up})
	start := time.Now()
	for range 5 {
		if _, err := c.c.Write([]byte("x\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 5 {
		c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.r.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 700*time.Millisecond {
		t.Errorf("5 lines 20 ms apart with 200 ms latency took %v, want about 300 ms", d)
	}
}

func TestStallHoldsUntilRemoved(t *testing.T) {
	p := start(t)
	c := dial(t, p)
	c.roundTrip(t, "hello")
	remove := p.Add(Any, Fault{Stall: true})
	if _, err := c.c.Write([]byte("held\n")); err != nil {
		t.Fatal(err)
	}
	c.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Fatal("a stalled connection answered")
	}
	remove()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := c.r.ReadString('\n'); err != nil || got != "held\n" {
		t.Fatalf("after the stall: %q, %v; want the held line", got, err)
	}
}

func TestResetAndRefuse(t *testing.T) {
	p := start(t)
	a, b := dial(t, p), dial(t, p)
	a.roundTrip(t, "SUBSCRIBE")
	b.roundTrip(t, "PING")
	if n := p.Reset(Sent("SUBSCRIBE")); n != 1 {
		t.Fatalf("Reset closed %d connections, want 1", n)
	}
	a.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := a.r.ReadString('\n'); err == nil {
		t.Fatal("reset connection still reads")
	}
	b.roundTrip(t, "still there")

	p.Refuse(true)
	// The proxy accepts and resets at once: the client sees the reset on
	// its dial (when it arrives before the handshake completes on the
	// client's side) or on its first read.
	if nc, err := net.Dial("tcp", p.Addr()); err == nil {
		defer nc.Close()
		c := &client{nc, bufio.NewReader(nc)}
		c.c.Write([]byte("x\n"))
		c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.r.ReadString('\n'); err == nil {
			t.Fatal("a connection made while refusing was served")
		}
	}
	p.Refuse(false)
	dial(t, p).roundTrip(t, "back")
}
