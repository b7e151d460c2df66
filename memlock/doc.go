// Package memlock is an in-process dlock driver: a lock engine that lives in
// the process, with TTLs, FIFO waiting and fencing tokens that behave like a
// real engine's. Use it in unit tests and examples, and to coordinate
// goroutines that will later be separate processes. It offers every
// primitive: Mutex, RWMutex (readers granted together, never past a waiting
// writer), Semaphore and Election, on one FIFO queue per name.
//
//	c, err := memlock.New()     // a client on a private engine
//	e := memlock.NewEngine()    // or several clients on one engine
//	c1, err := e.NewClient()    // each like a connection of its own
//	c2, err := e.NewClient()
//
// # URLs
//
// The scheme is "mem" (Scheme):
//
//   - mem:// opens a client on the process-wide engine.
//   - mem://NAME opens a client on the engine called NAME, made on first
//     use; clients opened with the same NAME share its locks.
//
// A path other than "/", a query or user information is an invalid
// argument; no environment variable is read. Nothing is shared outside the
// process: an engine, its locks and its tokens live as long as the process
// (fencing tokens increase for that long). Its TTLs and its queue behave like
// a server's, so a test can see a lease expire, be dropped (Engine.Drop) or
// wait in line.
package memlock
