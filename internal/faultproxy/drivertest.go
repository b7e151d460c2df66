package faultproxy

import (
	"sync"

	"github.com/dlockio/dlock/drivertest"
)

// Apply puts a drivertest.Fault on the connections m matches on every proxy
// in ps (one driver's proxies, one per server) and returns its undo, for
// harnesses that implement drivertest.Faulter. Down resets the matching
// connections and refuses new ones (all new ones: which kind a connection
// is shows only after the client has spoken on it). Reset resets the
// matching connections once and leaves new ones alone.
func Apply(ps []*Proxy, m Match, f drivertest.Fault) (undo func()) {
	var removes []func()
	for _, p := range ps {
		if f.Reset {
			p.Reset(m)
			continue
		}
		if f.Down {
			p.Refuse(true)
			p.Reset(m)
			removes = append(removes, func() { p.Refuse(false) })
			continue
		}
		dir := Both
		switch f.Dir {
		case drivertest.ToEngine:
			dir = Up
		case drivertest.ToClient:
			dir = Down
		}
		removes = append(removes, p.Add(m, Fault{Delay: f.Delay, Stall: f.Stall, Dir: dir}))
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			for _, r := range removes {
				r()
			}
		})
	}
}
