package scenario

import (
	"fmt"
	"slices"
	"time"
)

// Percentile returns the q-quantile (0 < q ≤ 1) of ds by nearest rank: the
// smallest sample such that a fraction q of all samples is at or below it.
// It returns 0 for no samples and leaves ds as it was.
func Percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := ds
	if !slices.IsSorted(s) {
		s = slices.Clone(ds)
		slices.Sort(s)
	}
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Median is Percentile(ds, 0.5).
func Median(ds []time.Duration) time.Duration { return Percentile(ds, 0.5) }

// Ms is d in milliseconds.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// FormatDuration prints a latency with three significant digits, "-" for
// none.
func FormatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
