package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// report renders the results as markdown.
func report(c config, results []*result, took time.Duration) string {
	var b strings.Builder
	total, accepted := 0, 0
	for _, r := range results {
		total += r.Orders
		accepted += r.Accepted
	}
	fmt.Fprintf(&b, "\n## chaos run: seed %d, %d orders (%s), %s\n\n", c.Seed, total, strings.Join(c.Modes, " + "), took.Round(time.Second))
	fmt.Fprintf(&b, "`go run ./cmd/chaos -seed %d -orders %d -modes %s`; %d clients, %d customers; 2 order services (with relays), 2 inventory, 2 notification consumers; Toxiproxy on every link to Postgres and to the emulator.\n\n",
		c.Seed, c.Orders, strings.Join(c.Modes, ","), c.Clients, c.Customers)
	for _, r := range results {
		fmt.Fprintf(&b, "### %s queues\n\n", r.Mode)
		fmt.Fprintf(&b, "| figure | value |\n|---|---|\n")
		fmt.Fprintf(&b, "| orders placed / accepted / given up | %d / %d / %d |\n", r.Orders, r.Accepted, r.GaveUp)
		fmt.Fprintf(&b, "| reserved / rejected (out of stock) | %d / %d |\n", r.Reserved, r.Rejected)
		fmt.Fprintf(&b, "| load phase | %s, %.1f orders/s accepted |\n", r.LoadTime.Round(time.Millisecond), r.OrdersPerSec)
		fmt.Fprintf(&b, "| drain after the load | %s |\n", r.DrainTime.Round(time.Millisecond))
		fmt.Fprintf(&b, "| end-to-end latency (first POST → final state) | p50 %s, p99 %s, max %s |\n",
			r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond), r.Max.Round(time.Millisecond))
		fmt.Fprintf(&b, "| faults injected | %d: %s |\n", len(r.Faults), faultCounts(r.FaultCounts))
		fmt.Fprintf(&b, "| duplicates sent / poison injected | %d / %d |\n", r.DuplicatesSent, r.PoisonInjected)
		fmt.Fprintf(&b, "| longest recovery (fault end → every order accepted before it final) | %s, after `%s` |\n",
			r.LongestRecovery.Round(time.Millisecond), strings.TrimSpace(r.RecoveryAfter))
		fmt.Fprintf(&b, "\n| invariant | verdict |\n|---|---|\n")
		for _, inv := range r.Invariants {
			v := "ok"
			if !inv.OK {
				v = "**VIOLATED**"
			}
			if inv.Detail != "" {
				v += ": " + strings.ReplaceAll(inv.Detail, "|", "/")
			}
			fmt.Fprintf(&b, "| %s | %s |\n", inv.Name, v)
		}
		fmt.Fprintf(&b, "\n| process | max RSS, first window | max RSS, last window | max RSS | samples | verdict |\n|---|---|---|---|---|---|\n")
		for _, m := range r.Memory {
			v := "ok"
			switch {
			case !m.Judged:
				v = "reported only"
			case m.Leak:
				v = "**LEAK**"
			}
			fmt.Fprintf(&b, "| %s | %.1f MB (%s) | %.1f MB (%s) | %.1f MB | %d | %s |\n", m.Slot,
				float64(m.FirstKB)/1024, m.FirstWin, float64(m.LastKB)/1024, m.LastWin, float64(m.MaxKB)/1024, m.Samples, v)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func faultCounts(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// printFailure prints what a failed phase broke, the orders involved and
// the schedule that was played.
func printFailure(r *result) {
	if len(r.Violations) == 0 {
		return
	}
	fmt.Printf("\n== %s: %d violations\n", r.Mode, len(r.Violations))
	for _, v := range r.Violations {
		fmt.Printf("VIOLATION %s: %s\n", v.Invariant, v.Detail)
		for i, o := range v.Orders {
			if i == maxListOrders {
				fmt.Printf("    … and %d more\n", len(v.Orders)-i)
				break
			}
			fmt.Printf("    %s\n", o)
		}
	}
	fmt.Printf("fault schedule played (%s, seed %d):\n", r.Mode, r.Seed)
	for _, f := range r.Faults {
		line := fmt.Sprintf("  [%7.1fs-%7.1fs] %s", f.Start.Seconds(), f.End.Seconds(), f)
		if f.Note != "" {
			line += " — " + f.Note
		}
		fmt.Println(line)
	}
}
