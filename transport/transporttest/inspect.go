package transporttest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edaproject/eda/transport"
)

// inspects reports whether the suite runs the Inspector case on tr.
func inspects(tr transport.Transport) bool {
	_, ok := tr.(transport.Inspector)
	return ok
}

// inspect checks transport.Inspector: publish n, receive one and hold it
// unsettled: the queue shows n-1 visible and 1 in flight, its dead-letter
// queue is empty, and the oldest message is at least as old as the time
// since Publish returned (when the transport knows the age). The
// subscription ends after the first message, so that messages a batching
// subscriber received ahead are given back and only the held one stays in
// flight. Where the transport has delayed delivery, a message published
// for later counts as delayed. Counts are polled until Harness.Timeout: SQS's are approximate.
func (s *suite) inspect(t *testing.T) {
	e := s.env(t)
	in := e.tr.(transport.Inspector)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}, MaxReceiveCount: 5})

	const n = 3
	msgs, _ := newMessages(n, "inspect")
	e.publish(topic, msgs...)
	published := time.Now()
	e.waitDepth(in, q.Name, transport.Depth{Visible: n}, 0)

	subCtx, stop := context.WithCancel(e.ctx)
	held := e.receive(e.subscribe(subCtx, q.Name), "inspect")
	stop()
	defer held.Ack()

	// Poll for at least minAge, so the age check covers a measurable time.
	const minAge = 100 * time.Millisecond
	d := e.waitDepth(in, q.Name, transport.Depth{Visible: n - 1, InFlight: 1}, minAge)
	if d.depth.OldestAgeKnown && d.depth.OldestAge < d.sincePublish(published) {
		t.Errorf("OldestAge %s, but the messages were published %s before the reading", d.depth.OldestAge, d.sincePublish(published))
	}
	if d.depth.OldestAgeKnown && d.depth.OldestAge > time.Since(published)+time.Minute {
		t.Errorf("OldestAge %s, messages published %s ago", d.depth.OldestAge, time.Since(published))
	}

	e.waitDepth(in, q.DeadLetterQueue, transport.Depth{}, 0)

	// A message published with a delivery delay counts as delayed until due.
	if e.tr.Features().DelayedDelivery {
		later, _ := newMessages(1, "inspect-delayed")
		transport.SetDeliverAt(later[0], time.Now().Add(10*time.Minute))
		e.publish(topic, later...)
		e.waitDepth(in, q.Name, transport.Depth{Visible: n - 1, InFlight: 1, Delayed: 1}, 0)
	}

	if _, err := in.QueueDepth(e.ctx, e.name("undeclared")); !errors.Is(err, transport.ErrUnknownQueue) {
		t.Errorf("QueueDepth of an undeclared queue: %v, want ErrUnknownQueue", err)
	}
}

type depthReading struct {
	depth transport.Depth
	at    time.Time // when the call started
}

func (r depthReading) sincePublish(published time.Time) time.Duration { return r.at.Sub(published) }

// waitDepth polls QueueDepth until its counts are want's and at least
// minWait has passed.
func (e *env) waitDepth(in transport.Inspector, queue string, want transport.Depth, minWait time.Duration) depthReading {
	e.t.Helper()
	start := time.Now()
	deadline := start.Add(e.s.h.Timeout + minWait)
	for {
		at := time.Now()
		d, err := in.QueueDepth(e.ctx, queue)
		if err != nil {
			e.t.Fatalf("QueueDepth %q: %v", queue, err)
		}
		if d.Visible == want.Visible && d.InFlight == want.InFlight && d.Delayed == want.Delayed && time.Since(start) >= minWait {
			if d.OldestAgeKnown && d.Visible+d.InFlight == 0 && d.OldestAge != 0 {
				e.t.Errorf("QueueDepth %q: empty queue with OldestAge %s", queue, d.OldestAge)
			}
			return depthReading{depth: d, at: at}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("QueueDepth %q: %+v, want visible %d, in flight %d, delayed %d", queue, d, want.Visible, want.InFlight, want.Delayed)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-e.ctx.Done():
			e.t.Fatal(e.ctx.Err())
		}
	}
}
