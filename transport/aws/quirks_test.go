package aws_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
)

// TestEmulatorFIFOBatchOrder publishes one FIFO group's 10 messages in one
// call without the workaround: the transport sends them in one
// PublishBatch of 10 (what AWS takes, in order), which fauxqs takes in the
// string order of the entries' member index, so the 10th comes second.
// With Config.EmulatorFIFOBatchOrder (TestFIFOBatchOrder) they arrive in
// order. When this test fails, fauxqs has fixed it: remove the workaround.
func TestEmulatorFIFOBatchOrder(t *testing.T) {
	ctx := testContext(t)
	cfg := testConfig(t)
	cfg.EmulatorFIFOBatchOrder = false
	tr := newTransport(t, cfg)
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, FIFO: true}); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*message.Message
	for i := range 10 {
		msgs = append(msgs, newMsg(fmt.Sprint(i), map[string]string{transport.MetadataGroupID: "g"}))
	}
	if err := tr.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 10 {
		m := receive(t, ch, "fifo")
		got = append(got, string(m.Payload))
		m.Ack()
	}
	if order := strings.Join(got, ","); order != "0,9,1,2,3,4,5,6,7,8" {
		t.Errorf("fauxqs delivered a batch of 10 as %s, want 0,9,1,...,8 (the quirk EmulatorFIFOBatchOrder works around; sent 9 at a time it would be in order)", order)
	}
}
