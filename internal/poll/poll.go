// Package poll waits, in tests, for an effect that has no signal to wait on
// (a row in a table, a connection in pg_stat_activity): it checks a
// condition at a short interval until it holds or a deadline passes.
package poll

import "time"

// Interval is how often Until checks.
const Interval = 10 * time.Millisecond

// Until calls cond every Interval until it returns true, and reports
// whether it did within the given time.
func Until(within time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			return cond()
		}
	}
	return true
}
