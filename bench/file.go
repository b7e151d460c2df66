package bench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FileFamily keeps the counter in a file of dir: the file system is the
// engine of file locks.
func FileFamily(dir string) Family {
	return Family{Name: "file", Counter: fileCounter{dir}}
}

type fileCounter struct{ dir string }

func (f fileCounter) Get(_ context.Context, key string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(f.dir, key+".count"))
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

func (f fileCounter) Set(_ context.Context, key string, v int64) error {
	return os.WriteFile(filepath.Join(f.dir, key+".count"), []byte(strconv.FormatInt(v, 10)), 0o644)
}

// FileFloor is open + flock(LOCK_EX) + close, the kernel's own queue as the
// waiting primitive: what any file lock costs at least.
func FileFloor(dir string) Contender {
	return Contender{
		Name: "floor-file", Family: "file", Kind: Floor,
		Note: "open, flock(LOCK_EX) (blocking), close",
		NewWorker: func(context.Context) (Worker, error) {
			return WorkerFunc{LockFunc: func(ctx context.Context, name string) (func(context.Context) error, error) {
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
