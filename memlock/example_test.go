package memlock_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/memlock"
)

// Two clients of one engine contend for a lock; the engine drops it, as an
// operator deleting it would, and the holder learns at once.
func Example() {
	ctx := context.Background()
	e := memlock.NewEngine()
	a, err := e.NewClient()
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := e.NewClient()
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	l, err := a.Mutex("jobs/nightly").Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("a holds it, token", l.Token())
	_, err = b.Mutex("jobs/nightly").TryLock(ctx)
	fmt.Println("b cannot take it:", errors.Is(err, dlock.ErrNotAcquired))

	e.Drop("jobs/nightly")
	<-l.Done()
	fmt.Println("a lost it:", errors.Is(l.Err(), dlock.ErrLockLost))

	err = dlock.Do(ctx, b, "jobs/nightly", func(ctx context.Context, l *dlock.Lease) error {
		fmt.Println("b holds it, token", l.Token())
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// a holds it, token 1
	// b cannot take it: true
	// a lost it: true
	// b holds it, token 2
}

// Clients opened on one mem://NAME URL share that engine's locks.
func Example_url() {
	ctx := context.Background()
	a, err := dlock.Open(ctx, "mem://example-url")
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := dlock.Open(ctx, "mem://example-url")
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	l, err := a.Mutex("report").Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Unlock(ctx)
	st, err := b.Status(ctx, "report")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("held:", st.Held, "token:", st.Token)
	// Output:
	// held: true token: 1
}
