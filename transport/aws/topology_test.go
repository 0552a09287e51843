package aws_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

func countActions(p edaaws.Plan) map[edaaws.Action]int {
	n := map[edaaws.Action]int{}
	for _, c := range p.Changes {
		n[c.Action]++
	}
	return n
}

func TestTopologyPlanApply(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	orders, payments, ledgerTopic := uniq("orders"), uniq("payments"), uniq("ledger")
	inventory, notification, ledger := uniq("inventory"), uniq("notification"), uniq("ledger")
	placedOnly := `{"ce_type":["orders.Placed"]}`
	topo := edaaws.Topology{
		Topics: []edaaws.Topic{{Name: orders}, {Name: payments}},
		Queues: []edaaws.Queue{
			{Queue: transport.Queue{Name: inventory, Topics: []string{orders}, MaxReceiveCount: 5},
				FilterPolicies: map[string]string{orders: placedOnly}},
			{Queue: transport.Queue{Name: notification, Topics: []string{orders, payments}}},
			{Queue: transport.Queue{Name: ledger, Topics: []string{ledgerTopic}, FIFO: true, VisibilityTimeout: 10 * time.Second}},
		},
	}

	plan, err := tr.Plan(ctx, topo)
	if err != nil {
		t.Fatal(err)
	}
	want := map[edaaws.Action]int{
		edaaws.ActionCreateTopic: 3, // orders, payments, ledger.fifo
		edaaws.ActionCreateQueue: 4, // inventory-dlq, inventory, notification, ledger.fifo
		edaaws.ActionSubscribe:   4, // inventory<-orders, notification<-orders, notification<-payments, ledger<-ledger
	}
	if got := countActions(plan); !mapsEqual(got, want) {
		t.Fatalf("plan %v, want %v:\n%s", got, want, plan)
	}
	if !strings.Contains(plan.String(), ledgerTopic+".fifo") || !strings.Contains(plan.String(), ledger+".fifo") {
		t.Errorf("plan does not name the FIFO resources with .fifo:\n%s", plan)
	}
	// Plan changed nothing.
	if again, err := tr.Plan(ctx, topo); err != nil || len(again.Changes) != len(plan.Changes) {
		t.Fatalf("second Plan: %v, %d changes, want %d", err, len(again.Changes), len(plan.Changes))
	}

	applied, err := tr.Apply(ctx, topo)
	if err != nil {
		t.Fatal(err)
	}
	if got := countActions(applied); !mapsEqual(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	for i := range 2 { // idempotent: nothing left to do, twice
		if p, err := tr.Plan(ctx, topo); err != nil || len(p.Changes) != 0 {
			t.Fatalf("Plan after Apply (%d): %v\n%s", i, err, p)
		}
		if p, err := tr.Apply(ctx, topo); err != nil || len(p.Changes) != 0 {
			t.Fatalf("Apply after Apply (%d): %v\n%s", i, err, p)
		}
	}

	// The queue policy lets exactly the subscribed topics send.
	qurl, err := tr.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &notification})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := tr.SQS().GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: qurl.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameAll},
	})
	if err != nil {
		t.Fatal(err)
	}
	var policy edaaws.PolicyDocument
	if err := json.Unmarshal([]byte(attrs.Attributes["Policy"]), &policy); err != nil {
		t.Fatalf("queue policy %q: %v", attrs.Attributes["Policy"], err)
	}
	if len(policy.Statement) != 1 {
		t.Fatalf("queue policy has %d statements, want 1: %s", len(policy.Statement), policy.JSON())
	}
	st := policy.Statement[0]
	arn := func(service, name string) string { return "arn:aws:" + service + ":us-east-1:000000000000:" + name }
	wantSources := []string{arn("sns", orders), arn("sns", payments)}
	slices.Sort(wantSources)
	if st.Effect != "Allow" || st.Principal["Service"] != "sns.amazonaws.com" ||
		!slices.Equal(st.Action, []string{"sqs:SendMessage"}) ||
		!slices.Equal(st.Resource, []string{arn("sqs", notification)}) ||
		!slices.Equal(st.Condition["ArnEquals"]["aws:SourceArn"], wantSources) {
		t.Errorf("queue policy statement %+v, want SendMessage from %v only", st, wantSources)
	}

	// Redrive to the DLQ.
	iurl, err := tr.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &inventory})
	if err != nil {
		t.Fatal(err)
	}
	iattrs, err := tr.SQS().GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: iurl.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameAll},
	})
	if err != nil {
		t.Fatal(err)
	}
	var redrive struct {
		DeadLetterTargetArn string `json:"deadLetterTargetArn"`
		MaxReceiveCount     any    `json:"maxReceiveCount"`
	}
	if err := json.Unmarshal([]byte(iattrs.Attributes["RedrivePolicy"]), &redrive); err != nil ||
		redrive.DeadLetterTargetArn != arn("sqs", inventory+"-dlq") || fmt.Sprint(redrive.MaxReceiveCount) != "5" {
		t.Errorf("redrive policy %q: %v", iattrs.Attributes["RedrivePolicy"], err)
	}

	// Subscriptions use raw delivery; the filter policy filters.
	subs, err := tr.SNS().ListSubscriptionsByTopic(ctx, &sns.ListSubscriptionsByTopicInput{TopicArn: awssdk.String(arn("sns", orders))})
	if err != nil {
		t.Fatal(err)
	}
	if len(subs.Subscriptions) != 2 {
		t.Fatalf("%d subscriptions on %s, want 2", len(subs.Subscriptions), orders)
	}
	for _, s := range subs.Subscriptions {
		a, err := tr.SNS().GetSubscriptionAttributes(ctx, &sns.GetSubscriptionAttributesInput{SubscriptionArn: s.SubscriptionArn})
		if err != nil {
			t.Fatal(err)
		}
		if a.Attributes["RawMessageDelivery"] != "true" {
			t.Errorf("subscription %s: RawMessageDelivery=%q", awssdk.ToString(s.Endpoint), a.Attributes["RawMessageDelivery"])
		}
	}
	inv, err := tr.Subscribe(ctx, inventory)
	if err != nil {
		t.Fatal(err)
	}
	notif, err := tr.Subscribe(ctx, notification)
	if err != nil {
		t.Fatal(err)
	}
	cancelled := newMsg("cancelled", map[string]string{"ce_type": "orders.Cancelled"})
	placed := newMsg("placed", map[string]string{"ce_type": "orders.Placed"})
	if err := tr.Publish(orders, cancelled, placed); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, inv, "inventory"); m.UUID != placed.UUID {
		t.Errorf("inventory received %q, want only orders.Placed", m.Payload)
	} else {
		m.Ack()
	}
	seen := map[string]bool{}
	for range 2 {
		m := receive(t, notif, "notification")
		seen[m.UUID] = true
		m.Ack()
	}
	if !seen[placed.UUID] || !seen[cancelled.UUID] {
		t.Errorf("notification (no filter) received %v, want both", seen)
	}

	// Drift is planned as updates and applied.
	topo.Queues[0].VisibilityTimeout = time.Minute
	topo.Queues[0].FilterPolicies[orders] = `{"ce_type":["orders.Placed","orders.Cancelled"]}`
	plan, err = tr.Apply(ctx, topo)
	if err != nil {
		t.Fatal(err)
	}
	want = map[edaaws.Action]int{edaaws.ActionUpdateQueue: 1, edaaws.ActionUpdateSubscription: 1}
	if got := countActions(plan); !mapsEqual(got, want) {
		t.Fatalf("drift plan %v, want %v:\n%s", got, want, plan)
	}
	if p, err := tr.Plan(ctx, topo); err != nil || len(p.Changes) != 0 {
		t.Fatalf("Plan after drift Apply: %v\n%s", err, p)
	}

	// A declaration of an existing FIFO queue as standard is refused.
	bad := edaaws.Topology{Topics: []edaaws.Topic{{Name: orders}, {Name: orders, FIFO: true}}}
	if _, err := tr.Plan(ctx, bad); !errors.Is(err, transport.ErrInvalidConfig) {
		t.Errorf("topic both FIFO and standard: %v, want ErrInvalidConfig", err)
	}
	if _, err := tr.Plan(ctx, edaaws.Topology{Queues: []edaaws.Queue{{
		Queue: transport.Queue{Name: inventory, Topics: []string{orders}}, FilterPolicies: map[string]string{"other": "{}"},
	}}}); !errors.Is(err, transport.ErrInvalidConfig) {
		t.Errorf("filter policy for a topic not subscribed: %v, want ErrInvalidConfig", err)
	}
}

// TestFilterPolicyKeys: a filter policy can match only metadata sent as a
// message attribute (Config.Attributes). One on other metadata is refused
// before anything is created; one on a configured attribute filters.
func TestFilterPolicyKeys(t *testing.T) {
	ctx := testContext(t)
	topic, queue := uniq("topic"), uniq("queue")
	topo := edaaws.Topology{Queues: []edaaws.Queue{{
		Queue:          transport.Queue{Name: queue, Topics: []string{topic}},
		FilterPolicies: map[string]string{topic: `{"$or": [{"tenant": ["acme"]}, {"ce_type": ["x"]}]}`},
	}}}
	def := newTransport(t, testConfig(t))
	_, err := def.Apply(ctx, topo)
	if !errors.Is(err, transport.ErrInvalidConfig) || !strings.Contains(fmt.Sprint(err), `"tenant"`) || strings.Contains(fmt.Sprint(err), `"ce_type"`) {
		t.Fatalf("filter on tenant with the default attributes: %v, want ErrInvalidConfig naming tenant only", err)
	}
	if _, err := def.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: awssdk.String(queue)}); err == nil {
		t.Error("the refused topology created its queue")
	}
	all := testConfig(t)
	all.Attributes = edaaws.AllAttributes
	if _, err := newTransport(t, all).Plan(ctx, topo); err != nil {
		t.Errorf("AllAttributes: %v", err)
	}

	cfg := testConfig(t)
	cfg.Attributes = []string{"ce_type", "tenant"}
	tr := newTransport(t, cfg)
	if _, err := tr.Apply(ctx, topo); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	other := newMsg("other", map[string]string{"tenant": "globex", "ce_type": "y"})
	acme := newMsg("acme", map[string]string{"tenant": "acme", "ce_type": "y"})
	if err := tr.Publish(topic, other, acme); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, queue)
	if m.UUID != acme.UUID || m.Metadata.Get("tenant") != "acme" || m.Metadata.Get(transport.MetadataEventID) != acme.UUID {
		t.Errorf("received %q %v, want only the acme message with its metadata", m.Payload, m.Metadata)
	}
	m.Ack()
}

// TestDeclareAddsTopics declares a queue twice with different topics: it
// receives from both, and the queue policy allows both.
func TestDeclareAddsTopics(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	a, b, queue := uniq("a"), uniq("b"), uniq("queue")
	for _, topic := range []string{a, b} {
		if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
			t.Fatal(err)
		}
	}
	plan, err := tr.Plan(ctx, edaaws.Topology{Queues: []edaaws.Queue{{Queue: transport.Queue{Name: queue, Topics: []string{a, b}}}}})
	if err != nil || len(plan.Changes) != 0 {
		t.Fatalf("Plan of both topics after two Declares: %v\n%s", err, plan)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{a, b} {
		m := newMsg(topic, nil)
		if err := tr.Publish(topic, m); err != nil {
			t.Fatal(err)
		}
		if got := receive(t, ch, topic); got.UUID != m.UUID {
			t.Fatalf("got %q, want %q", got.Payload, m.Payload)
		} else {
			got.Ack()
		}
	}
}

func mapsEqual(a, b map[edaaws.Action]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
