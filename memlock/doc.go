// Package memlock is an in-process dlock driver: a lock engine that lives in
// the process, with TTLs, FIFO waiting and fencing tokens that behave like a
// real engine's. Use it in unit tests and examples, and to coordinate
// goroutines that will later be separate processes.
//
//	c := memlock.New()               // a client on a private engine
//	e := memlock.NewEngine()         // or several clients on one engine
//	c1, c2 := e.NewClient(), e.NewClient()
//
// The URL "mem://" opens a client on the process-wide engine, "mem://NAME"
// on the engine called NAME (created on first use).
package memlock
