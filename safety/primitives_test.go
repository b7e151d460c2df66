package safety

import (
	"context"
	"testing"
	"time"

	"github.com/dlockio/dlock/driver"
)

// workload is what the workers of a scenario do: the mutex's, or another
// primitive's (workloads_test.go).
type workload struct {
	name     string
	workload string // workerCfg.Workload
	limit    int    // semaphore permits
	// hold, if set, is the work done under a lease (default: TTL/100).
	hold func(ttl time.Duration) time.Duration
	// offered says whether an engine offers the primitive; what names it.
	offered func(driver.Capabilities) bool
	what    string
}

var mutexWorkload = workload{name: "mutex"}

// primitives are run on every engine whose Capabilities offer them.
var primitives = []workload{
	{name: "rwmutex", workload: "rwmutex", what: "read-write locks (Capabilities.Shared)",
		offered: func(c driver.Capabilities) bool { return c.Shared }},
	// Two permits among four workers, each holding a quarter TTL, so that
	// holders overlap and a late one finds the permits taken.
	{name: "semaphore", workload: "semaphore", limit: 2, what: "semaphores (Capabilities.Semaphore)",
		hold:    func(ttl time.Duration) time.Duration { return ttl / 4 },
		offered: func(c driver.Capabilities) bool { return c.Semaphore }},
	{name: "election", workload: "election", what: "elections (Capabilities.Election)",
		offered: func(c driver.Capabilities) bool { return c.Election }},
}

// runPrimitive runs p's scenarios on e, if e's driver offers p: all of
// them with -safety.full, the short ones otherwise.
func runPrimitive(t *testing.T, e *engine, p workload) {
	caps, err := e.capabilities()
	if err != nil {
		t.Fatalf("%s: cannot read the driver's capabilities: %v", e.name, err)
	}
	if !p.offered(caps) {
		t.Skipf("%s does not offer %s: nothing to check", e.name, p.what)
	}
	for _, sc := range scenarios {
		if sc.applies(p.name) && (*full || sc.short) {
			t.Run(sc.name, func(t *testing.T) { runScenario(t, e, sc, p) })
		}
	}
}

// capabilities opens a driver on e, as a worker would, and reads what it
// offers.
func (e *engine) capabilities() (driver.Capabilities, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var drv driver.Driver
	var err error
	switch {
	case e.newDriver != nil:
		drv, err = e.newDriver()
	case e.urlFor != nil:
		var hosts []string
		for _, p := range e.servers {
			hosts = append(hosts, p.Addr())
		}
		drv, err = openDriver(ctx, e.urlFor(hosts))
	default:
		drv, err = openDriver(ctx, e.url)
	}
	if err != nil {
		return driver.Capabilities{}, err
	}
	defer drv.Close()
	if c, ok := drv.(driver.Capable); ok {
		return c.Capabilities(), nil
	}
	return driver.Capabilities{}, nil
}
