package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
)

// The faults. Each is bounded: it ends after its duration (or when the load
// ends), and what it broke is restored.
const (
	faultKill      = "kill"             // SIGKILL a service; restarted after Dur
	faultPGKill    = "pg-terminate"     // pg_terminate_backend of a process's connections
	faultPause     = "emulator-pause"   // SIGSTOP the emulator for Dur, then SIGCONT
	faultRestart   = "emulator-restart" // stop the emulator, start it again after Dur
	faultCut       = "cut"              // a link refuses and closes connections for Dur
	faultLatency   = "latency"          // Param ms (± a quarter) on a link for Dur
	faultStall     = "stall"            // a link swallows every byte for Dur, then closes its connections
	faultBandwidth = "bandwidth"        // Param KB/s on a link for Dur
	faultDup       = "duplicates"       // Param published outbox records sent again
)

// Lanes run at the same time, each its faults one after the other.
var lanes = []string{"process", "network"}

// fault is one entry of the schedule: what is drawn from the seed (Gap,
// Kind, Target, Dur, Param) and what happened when it was played.
type fault struct {
	N      int
	Lane   string
	Gap    time.Duration // quiet time before it
	Kind   string
	Target string // a slot, "slot/pg" or "slot/emu" (a link), "emulator", "broker"
	Dur    time.Duration
	Param  int

	Start, End time.Duration // since the load began
	Note       string        // what playing it did or failed to do
}

func (f fault) String() string {
	s := fmt.Sprintf("#%d %-7s +%-6s %-16s %-22s", f.N, f.Lane, f.Gap.Round(100*time.Millisecond), f.Kind, f.Target)
	if f.Dur > 0 {
		s += " for " + f.Dur.Round(10*time.Millisecond).String()
	}
	switch f.Kind {
	case faultLatency:
		s += fmt.Sprintf(" %dms", f.Param)
	case faultBandwidth:
		s += fmt.Sprintf(" %dKB/s", f.Param)
	case faultDup:
		s += fmt.Sprintf(" %d records", f.Param)
	}
	return s
}

// schedule draws the faults of each lane from the seed: the same seed and
// slots give the same sequence. A lane plays its kinds in rounds, each
// round a seeded shuffle of the lane's kinds (a kind appears as often as its
// weight), so even a short run sees every kind.
type schedule struct {
	rngs  map[string]*rand.Rand
	queue map[string][]string
	slots []string
	n     int
	mu    sync.Mutex
}

func newSchedule(seed uint64, phase int, slots []string) *schedule {
	s := &schedule{rngs: map[string]*rand.Rand{}, queue: map[string][]string{}, slots: slots}
	for i, l := range lanes {
		s.rngs[l] = rand.New(rand.NewPCG(seed, uint64(phase*len(lanes)+i+1)))
	}
	return s
}

type weighted struct {
	kind   string
	weight int
}

var laneKinds = map[string][]weighted{
	"process": {{faultKill, 3}, {faultPGKill, 2}, {faultPause, 1}, {faultRestart, 1}},
	"network": {{faultCut, 2}, {faultLatency, 1}, {faultStall, 1}, {faultBandwidth, 1}, {faultDup, 2}},
}

func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

// next draws the next fault of lane.
func (s *schedule) next(lane string) fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rngs[lane]
	if len(s.queue[lane]) == 0 {
		var round []string
		for _, w := range laneKinds[lane] {
			for range w.weight {
				round = append(round, w.kind)
			}
		}
		r.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		s.queue[lane] = round
	}
	kind := s.queue[lane][0]
	s.queue[lane] = s.queue[lane][1:]
	s.n++
	f := fault{N: s.n, Lane: lane, Kind: kind, Gap: between(r, 200*time.Millisecond, 1500*time.Millisecond)}
	slot := s.slots[r.IntN(len(s.slots))]
	link := slot + "/pg"
	if r.IntN(2) == 0 {
		link = slot + "/emu"
	}
	switch kind {
	case faultKill:
		f.Target, f.Dur = slot, between(r, 200*time.Millisecond, 3*time.Second)
	case faultPGKill:
		f.Target = slot
	case faultPause:
		f.Target, f.Dur = "emulator", between(r, 500*time.Millisecond, 5*time.Second)
	case faultRestart:
		f.Target, f.Dur = "emulator", between(r, 200*time.Millisecond, 2*time.Second)
	case faultCut:
		f.Target, f.Dur = link, between(r, 300*time.Millisecond, 5*time.Second)
	case faultLatency:
		f.Target, f.Dur, f.Param = link, between(r, time.Second, 8*time.Second), 20+r.IntN(400)
	case faultStall:
		f.Target, f.Dur = link, between(r, time.Second, 6*time.Second)
		f.Param = int(f.Dur / time.Millisecond)
	case faultBandwidth:
		f.Target, f.Dur, f.Param = link, between(r, time.Second, 8*time.Second), 8+r.IntN(120)
	case faultDup:
		f.Target, f.Param = "broker", 5+r.IntN(60)
	}
	return f
}

// preview is the first n faults of each lane that a fresh schedule with the
// same seed draws.
func preview(seed uint64, phase int, slots []string, n int) []fault {
	s := newSchedule(seed, phase, slots)
	var out []fault
	for range n {
		for _, l := range lanes {
			out = append(out, s.next(l))
		}
	}
	return out
}

// nemesis plays a schedule against a phase.
type nemesis struct {
	p      *phase
	sched  *schedule
	began  time.Time
	mu     sync.Mutex
	played []fault
	// emu serializes the emulator faults of the lanes with the
	// emulator's restarts.
	emu sync.Mutex
}

// run plays each lane until ctx ends.
func (n *nemesis) run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, l := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				f := n.sched.next(l)
				select {
				case <-ctx.Done():
					return
				case <-time.After(f.Gap):
				}
				if len(n.p.cfg.Kinds) > 0 && !slices.Contains(n.p.cfg.Kinds, f.Kind) {
					continue
				}
				f.Start = time.Since(n.began)
				n.p.logf("fault %s", f)
				f.Note = n.play(ctx, f)
				f.End = time.Since(n.began)
				n.mu.Lock()
				n.played = append(n.played, f)
				n.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// hold waits d or until ctx ends.
func hold(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (n *nemesis) link(target string) (*toxiproxy.Proxy, string) {
	slot, kind, _ := strings.Cut(target, "/")
	s := n.p.services[slot]
	if kind == "pg" {
		return s.pg, kind
	}
	return s.emu, kind
}

func (n *nemesis) play(ctx context.Context, f fault) string {
	switch f.Kind {
	case faultKill:
		s := n.p.services[f.Target]
		s.kill()
		hold(ctx, f.Dur)
		if err := s.start(); err != nil {
			return "restart failed: " + err.Error()
		}
		return ""
	case faultPGKill:
		var killed int
		err := n.p.admin.QueryRow(context.Background(),
			`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`,
			n.p.appName(f.Target)).Scan(&killed)
		if err != nil {
			return "pg_terminate_backend: " + err.Error()
		}
		return fmt.Sprintf("%d connections terminated", killed)
	case faultPause:
		n.emu.Lock()
		defer n.emu.Unlock()
		if err := n.p.emu.signal(syscall.SIGSTOP); err != nil {
			return err.Error()
		}
		hold(ctx, f.Dur)
		if err := n.p.emu.signal(syscall.SIGCONT); err != nil {
			return err.Error()
		}
		return ""
	case faultRestart:
		n.emu.Lock()
		defer n.emu.Unlock()
		n.p.emu.stop()
		hold(ctx, f.Dur)
		if err := n.p.emu.start(); err != nil {
			return "emulator restart failed: " + err.Error()
		}
		return ""
	case faultCut:
		px, _ := n.link(f.Target)
		px.Stop()
		hold(ctx, f.Dur)
		if err := px.Start(); err != nil {
			return "proxy restart failed: " + err.Error()
		}
		return ""
	case faultLatency, faultStall, faultBandwidth:
		px, _ := n.link(f.Target)
		var toxics []string
		for _, stream := range []string{"upstream", "downstream"} {
			name := fmt.Sprintf("f%d-%s", f.N, stream)
			var body string
			switch f.Kind {
			case faultStall:
				body = fmt.Sprintf(`{"name":%q,"type":"timeout","stream":%q,"toxicity":1,"attributes":{"timeout":%d}}`, name, stream, f.Param)
			case faultBandwidth:
				body = fmt.Sprintf(`{"name":%q,"type":"bandwidth","stream":%q,"toxicity":1,"attributes":{"rate":%d}}`, name, stream, f.Param)
			default:
				jitter := 0
				if f.Kind == faultLatency {
					jitter = f.Param / 4
				}
				body = fmt.Sprintf(`{"name":%q,"type":"latency","stream":%q,"toxicity":1,"attributes":{"latency":%d,"jitter":%d}}`, name, stream, f.Param, jitter)
			}
			if _, err := px.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
				return "toxic: " + err.Error()
			}
			toxics = append(toxics, name)
		}
		hold(ctx, f.Dur)
		// Toxiproxy's removal waits for the toxic's pipes; bound it so a
		// lane never hangs on a stuck connection.
		removed := make(chan struct{})
		go func() {
			for _, name := range toxics {
				_ = px.Toxics.RemoveToxic(context.Background(), name)
			}
			close(removed)
		}()
		select {
		case <-removed:
			return ""
		case <-time.After(5 * time.Second):
			return "toxic removal still pending after 5s"
		}
	case faultDup:
		k, err := n.p.duplicate(ctx, f.Param)
		if err != nil {
			return fmt.Sprintf("%d sent again, then: %v", k, err)
		}
		return fmt.Sprintf("%d sent again", k)
	}
	return "unknown fault"
}
