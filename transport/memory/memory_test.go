package memory_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
)

func receive(t *testing.T, ch <-chan *message.Message, what string) *message.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing received", what)
	}
	return nil
}

// On a FIFO queue a delayed message, published delayed or nacked with a
// redelivery delay, holds back the rest of its group: the group stays in
// order.
func TestFIFODelayHoldsBackGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.Declare(ctx, transport.Queue{Name: "q", Topics: []string{"t"}, FIFO: true}); err != nil {
		t.Fatal(err)
	}
	grouped := func(p string) *message.Message {
		m := message.NewMessage(p, []byte(p))
		m.Metadata.Set(transport.MetadataGroupID, "g")
		return m
	}
	const delay = 200 * time.Millisecond
	head, next, other := grouped("head"), grouped("next"), message.NewMessage("other", []byte("other"))
	other.Metadata.Set(transport.MetadataGroupID, "h")
	deliverAt := time.Now().Add(delay)
	transport.SetDeliverAt(head, deliverAt)
	if err := tr.Publish("t", head, next, other); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch, "other group"); string(m.Payload) != "other" {
		t.Fatalf("first delivery %q, want the other group's message (the head of g is delayed)", m.Payload)
	} else {
		m.Ack()
	}
	m := receive(t, ch, "delayed head")
	if string(m.Payload) != "head" || time.Now().Before(deliverAt) {
		t.Fatalf("got %q at %s, want the head no earlier than %s", m.Payload, time.Now(), deliverAt)
	}
	transport.SetRedeliveryDelay(m, delay)
	nackedAt := time.Now()
	m.Nack()
	m = receive(t, ch, "head again")
	if string(m.Payload) != "head" || time.Since(nackedAt) < delay {
		t.Fatalf("got %q %s after the nack, want the head after %s", m.Payload, time.Since(nackedAt), delay)
	}
	m.Ack()
	if m := receive(t, ch, "next"); string(m.Payload) != "next" {
		t.Fatalf("got %q, want next", m.Payload)
	}
}
