package memlock

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type harness struct{ e *Engine }

func (h harness) MakeDriver(context.Context) (driver.Driver, error) { return h.e.newConn(), nil }
func (h harness) Close()                                            {}
func (h harness) ShortTTL() time.Duration                           { return 500 * time.Millisecond }

func (h harness) ForceLoss(_ context.Context, name string) error {
	h.e.Drop(name)
	return nil
}

func (h harness) Crash(_ context.Context, d driver.Driver) (bool, error) {
	d.(*conn).crash()
	return false, nil
}

func TestConformance(t *testing.T) {
	drivertest.RunConformanceTests(t, func(context.Context, *testing.T) (drivertest.Harness, error) {
		return harness{NewEngine()}, nil
	})
}
