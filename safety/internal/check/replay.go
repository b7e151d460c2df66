package check

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Replay checks the lock history saved in a history.json again, against
// the model it names, with a longer timeout: for a run porcupine could not
// decide in time on a loaded machine. Only the lock operations and leader
// reads are checked; the resource's verdict is in the saved report.
func Replay(path string, timeout time.Duration) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var h struct {
		Ops     []Op
		Leaders []Observation
		Model   string
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r := Run{Name: "replay of " + path, Ops: h.Ops, Leaders: h.Leaders, Timeout: timeout, ModelName: h.Model}
	switch {
	case h.Model == "" || h.Model == "lease":
	case h.Model == "lease/early-loss":
		r.Model = &EarlyLossLeaseModel
	case h.Model == "rw":
		r.Model = &RWModel
	case h.Model == "rw/early-loss":
		r.Model = &EarlyLossRWModel
	case strings.HasPrefix(h.Model, "semaphore/"):
		n, err := strconv.Atoi(strings.TrimPrefix(h.Model, "semaphore/"))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: bad model %q", path, h.Model)
		}
		m := SemaphoreModel(n)
		r.Model = &m
	default:
		return nil, fmt.Errorf("%s: unknown model %q", path, h.Model)
	}
	return Check(r, ""), nil
}
