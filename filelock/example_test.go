package filelock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/filelock"
)

// Two clients (as two processes would) share locks through a directory.
func Example() {
	dir, err := os.MkdirTemp("", "filelock-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	a, err := dlock.Open(ctx, "file://"+dir) // or filelock.New(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := filelock.New(dir)
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
	if err := l.Unlock(ctx); err != nil {
		log.Fatal(err)
	}

	err = dlock.Do(ctx, b, "jobs/nightly", func(ctx context.Context, l *dlock.Lease) error {
		fmt.Println("b holds it, token", l.Token())
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}

	// The lock is a file named after it, and its last exclusive holder's
	// token and value (an election's leader's) are in the leader file beside
	// it; dlock-tokens keeps the directory's highest token.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fmt.Println(e.Name())
	}
	// Output:
	// a holds it, token 1
	// b cannot take it: true
	// b holds it, token 2
	// dlock-tokens
	// jobs%2Fnightly.leader
	// jobs%2Fnightly.lock
}
