package aws_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edaproject/eda/internal/awscalls"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// A publisher that sends delayed messages (SQS DelaySeconds to each
// subscribed queue, SNS having no per-message delay) is allowed every call
// it makes by ServicePolicy with DelayedDelivery, checked by the IAM engine
// against the calls recorded on the emulator; without DelayedDelivery its
// SendMessage calls are denied, and it may send to no other queue.
func TestDelayedDeliveryPolicyEvaluated(t *testing.T) {
	awscalls.RequireEngine(t)
	const account = "000000000000"
	ctx := testContext(t)
	setup := newTransport(t, testConfig(t))
	topic, q1, q2 := uniq("topic"), uniq("queue"), uniq("queue")
	queues := []transport.Queue{{Name: q1, Topics: []string{topic}}, {Name: q2, Topics: []string{topic}}}
	for _, q := range queues {
		if err := setup.Declare(ctx, q); err != nil {
			t.Fatal(err)
		}
	}

	cfg := testConfig(t)
	cfg.AutoCreate = false
	rec := awscalls.New(cfg.AWS.Region, account, "")
	rec.Install(&cfg.AWS)
	pub := newTransport(t, cfg)
	later := newMsg("later", map[string]string{"ce_type": "orders.Placed"})
	transport.SetDeliverAt(later, time.Now().Add(time.Minute))
	if err := pub.Publish(topic, later); err != nil {
		t.Fatal(err)
	}
	calls := rec.Calls()
	if !slices.ContainsFunc(calls, func(c awscalls.Call) bool { return c.Action == "sqs:SendMessage" }) {
		t.Fatalf("the delayed publish made no sqs:SendMessage call: %+v", calls)
	}
	if un := awscalls.Unmapped(calls); len(un) > 0 {
		t.Fatalf("calls the recorder cannot map: %+v", un)
	}

	role := "arn:aws:iam::" + account + ":role/publisher"
	access := edaaws.ServiceAccess{Region: cfg.AWS.Region, AccountID: account, Publishes: []edaaws.Topic{{Name: topic}}}
	without, err := edaaws.ServicePolicy(access)
	if err != nil {
		t.Fatal(err)
	}
	access.DelayedDelivery = queues
	with, err := edaaws.ServicePolicy(access)
	if err != nil {
		t.Fatal(err)
	}
	reqs := awscalls.Requests(role, account, with, calls)
	other := "arn:aws:sqs:" + cfg.AWS.Region + ":" + account + ":" + uniq("other")
	reqs = append(reqs, awscalls.Request{Name: "SendMessage to a queue not subscribed", Principal: role,
		Action: "sqs:SendMessage", Resource: other, AccountID: account, Identity: with})
	for _, c := range calls {
		if c.Action == "sqs:SendMessage" {
			reqs = append(reqs, awscalls.Request{Name: "without DelayedDelivery: " + c.Action + " " + c.Resource, Principal: role,
				Action: c.Action, Resource: c.Resource, AccountID: account, Identity: without})
		}
	}
	results := awscalls.Evaluate(t, reqs)
	if t.Failed() {
		var b strings.Builder
		for i, r := range results {
			b.WriteString(reqs[i].Name + ": " + r.Decision + "\n")
		}
		t.Log(b.String())
	}
}
