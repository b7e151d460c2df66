package bench

import (
	"context"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/internal/scenario"
)

// FileFamily keeps the counter in a file of dir: the file system is the
// engine of file locks.
func FileFamily(dir string) Family {
	return Family{Name: "file", Counter: scenario.FileCounter(dir)}
}

// FileFloor is open + flock(LOCK_EX) + close, the kernel's own queue as the
// waiting primitive: what any file lock costs at least.
func FileFloor(dir string) Contender {
	return Contender{
		Name: "floor-file", Family: "file", Kind: Floor,
		Note: "open, flock(LOCK_EX) (blocking), close",
		NewWorker: func(context.Context) (scenario.Locker, error) {
			return peer{lock: func(ctx context.Context, name string) (func(context.Context) error, error) {
				f, err := os.OpenFile(filepath.Join(dir, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
				if err != nil {
					return nil, err
				}
				// flock cannot be interrupted by ctx; the harness only
				// cancels after every holder has released.
				if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
					f.Close()
					return nil, err
				}
				return func(context.Context) error { return f.Close() }, nil
			}}, nil
		},
	}
}
