package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/internal/awscalls"
)

const (
	iamAccount = "000000000000" // the emulator's
	iamRegion  = "us-east-1"
	// topologyFile is the example's topology as edactl applies it and
	// writes the services' policies from it.
	topologyFile = "../../cmd/edactl/testdata/orders-topology.json"
)

// edactlBinary builds edactl once per test binary.
var edactlBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "eda-iam-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "edactl")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/edactl").CombinedOutput()
	if err != nil {
		return "", &buildError{string(out)}
	}
	return bin, nil
})

type buildError struct{ out string }

func (e *buildError) Error() string { return "go build ./cmd/edactl: " + e.out }

func runEdactl(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := edactlBinary()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("edactl %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

// policies returns the policies edactl iam prints for role, by name.
func policies(t *testing.T, prefix, role string) map[string]any {
	t.Helper()
	var list []struct {
		Name   string `json:"name"`
		Policy any    `json:"policy"`
	}
	js := runEdactl(t, "iam", "-f", topologyFile, "-prefix", prefix, "-role", role, "-account", iamAccount, "-region", iamRegion, "-o", "json")
	if err := json.Unmarshal([]byte(js), &list); err != nil {
		t.Fatalf("edactl iam -role %s: %v\n%s", role, err, js)
	}
	m := map[string]any{}
	for _, p := range list {
		m[p.Name] = p.Policy
	}
	return m
}

func arnOf(service, name string) string {
	return "arn:aws:" + service + ":" + iamRegion + ":" + iamAccount + ":" + name
}

// The production setup of the README, proven by a real IAM policy engine:
// edactl topology apply creates the topology, each service runs in its own
// process with AutoCreate off, one relay drains the shared outbox, and the
// demo runs through. Every AWS call each of them made must be allowed by
// the policy edactl iam prints for it; another service's queues and topics,
// and creating or deleting anything, must not; each queue policy lets SNS
// deliver from its subscribed topic only.
func TestIAMPoliciesAllowWhatTheServicesCall(t *testing.T) {
	awscalls.RequireEngine(t)
	o := scenario(t, "aws")
	requirePostgres(t)
	o.DB, o.Visibility = pgDSN, 30*time.Second // the file's; the services share one database, as separate processes do
	t.Cleanup(func() { dropSchemas(o.Schema) })
	runEdactl(t, "topology", "apply", "-f", topologyFile, "-prefix", o.Prefix, "-aws-endpoint", o.AWSEndpoint, "-account", iamAccount)
	services := policies(t, o.Prefix, "services")
	relayPolicy := policies(t, o.Prefix, "relay")["relay"]

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	recs := map[string]*awscalls.Recorder{}
	var orders *system
	for _, role := range []string{"inventory", "notification", "orders"} {
		ro := o
		ro.Role, ro.NoAutoCreate, ro.NoRelay = role, true, true
		rec := awscalls.New(iamRegion, iamAccount, "")
		ro.AWSConfig = rec.Install
		recs[role] = rec
		s, err := start(ctx, ro)
		if err != nil {
			t.Fatalf("start %s (AutoCreate off, topology applied by edactl): %v", role, err)
		}
		t.Cleanup(s.stop)
		if role == "orders" {
			orders = s
		}
	}
	// The relay, in a process of its own.
	ro := o
	ro.Role, ro.NoAutoCreate = "relay", true
	rec := awscalls.New(iamRegion, iamAccount, "")
	ro.AWSConfig = rec.Install
	recs["relay"] = rec
	tr, err := newTransport(ctx, ro, orders.db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	relay, err := newRelay(orders.db, tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()
	t.Cleanup(func() { stopRelay(); <-relayDone })

	sum, err := orders.demo(ctx, 8, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Pending != 0 || len(sum.DeadLettered) < 2 {
		t.Fatalf("demo: %+v", sum)
	}

	var reqs []awscalls.Request
	for _, role := range []string{"inventory", "notification", "orders", "relay"} {
		policy := services[role]
		if role == "relay" {
			policy = relayPolicy
		}
		if policy == nil {
			t.Fatalf("edactl iam prints no policy for %s", role)
		}
		reqs = append(reqs, awscalls.RecordedRequests(t, role, "arn:aws:iam::"+iamAccount+":role/"+role, iamAccount, policy, recs[role])...)
	}

	deny := func(role, action, resource string) {
		policy := services[role]
		if role == "relay" {
			policy = relayPolicy
		}
		reqs = append(reqs, awscalls.Request{Name: action + " " + resource, Principal: "arn:aws:iam::" + iamAccount + ":role/" + role,
			Action: action, Resource: resource, AccountID: iamAccount, Identity: policy})
	}
	p := o.Prefix
	for _, d := range []struct{ role, action, name string }{
		{"inventory", "sqs:ReceiveMessage", p + "notification"},  // another service's queue
		{"inventory", "sqs:DeleteMessage", p + "order-status"},   // another service's queue
		{"notification", "sqs:ReceiveMessage", p + "inventory"},  // another service's queue
		{"notification", "sns:Publish", p + "orders"},            // another service's topic
		{"inventory", "sns:Publish", p + "orders"},               // another service's topic
		{"orders", "sns:Publish", p + "inventory-events"},        // another service's topic
		{"orders", "sqs:ReceiveMessage", p + "inventory"},        // another service's queue
		{"inventory", "sqs:CreateQueue", p + "inventory"},        // create
		{"inventory", "sqs:DeleteQueue", p + "inventory"},        // delete
		{"inventory", "sqs:SetQueueAttributes", p + "inventory"}, // reconfigure
		{"orders", "sns:CreateTopic", p + "orders"},              // create
		{"orders", "sns:DeleteTopic", p + "orders"},              // delete
		{"orders", "sns:Subscribe", p + "orders"},                // subscribe
		{"notification", "sqs:PurgeQueue", p + "notification"},   // purge
		{"relay", "sqs:ReceiveMessage", p + "inventory"},         // the relay only publishes
		{"relay", "sns:DeleteTopic", p + "orders"},
	} {
		svc := strings.SplitN(d.action, ":", 2)[0]
		deny(d.role, d.action, arnOf(svc, d.name))
	}

	// SNS delivers to each subscribed queue under the queue policy the
	// topology wrote: from its topic, not from another.
	client := sqs.NewFromConfig(awssdk.Config{Region: iamRegion, Credentials: awssdk.AnonymousCredentials{}}, func(so *sqs.Options) {
		so.BaseEndpoint = awssdk.String(o.AWSEndpoint)
	})
	for _, d := range []struct{ queue, topic, other string }{
		{"inventory", "orders", "inventory-events"}, {"notification", "orders", "orders-poison"},
		{"order-status", "inventory-events", "orders"}, {"orders-poison", "orders-poison", "orders"},
	} {
		url, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: awssdk.String(p + d.queue)})
		if err != nil {
			t.Fatal(err)
		}
		attrs, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: url.QueueUrl,
			AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNamePolicy}})
		if err != nil {
			t.Fatal(err)
		}
		var policy any
		if err := json.Unmarshal([]byte(attrs.Attributes["Policy"]), &policy); err != nil {
			t.Fatalf("queue %s: policy %q: %v", d.queue, attrs.Attributes["Policy"], err)
		}
		for _, src := range []string{d.topic, d.other} {
			reqs = append(reqs, awscalls.Request{Name: "SNS delivery to " + p + d.queue + " from " + p + src, Principal: "sns.amazonaws.com",
				Action: "sqs:SendMessage", Resource: arnOf("sqs", p+d.queue), AccountID: iamAccount,
				Context:        map[string]string{"aws:SourceArn": arnOf("sns", p+src), "aws:SourceAccount": iamAccount},
				ResourcePolicy: policy, Allow: src == d.topic})
		}
	}
	awscalls.Evaluate(t, reqs)
}
