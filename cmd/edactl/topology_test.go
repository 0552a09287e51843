package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	edaaws "github.com/edaproject/eda/transport/aws"
)

type planJSON struct {
	Applied bool `json:"applied"`
	Changes []struct {
		Action   string `json:"action"`
		Resource string `json:"resource"`
		Detail   string `json:"detail"`
	} `json:"changes"`
}

// The shipped orders topology: plan shows the creates, apply makes them,
// plan then shows nothing.
func TestTopologyPlanApplyPlan(t *testing.T) {
	t.Parallel()
	ep := requireEmulator(t)
	prefix := uniq("tp") + "-"
	args := func(sub string, extra ...string) []string {
		return append([]string{"topology", sub, "-f", "testdata/orders-topology.json", "-prefix", prefix, "-aws-endpoint", ep}, extra...)
	}
	out := mustRun(t, args("plan")...)
	for _, want := range []string{
		"create-topic  " + prefix + "orders ",
		"create-queue  " + prefix + "inventory-dlq",
		"subscribe     " + prefix + "orders -> " + prefix + "notification",
		`"maxReceiveCount":5`,
		"14 change(s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan does not show %q:\n%s", want, out)
		}
	}
	var applied planJSON
	if err := json.Unmarshal([]byte(mustRun(t, args("apply", "-o", "json")...)), &applied); err != nil {
		t.Fatal(err)
	}
	if !applied.Applied || len(applied.Changes) != 14 {
		t.Fatalf("apply: applied %v, %d changes, want 14", applied.Applied, len(applied.Changes))
	}
	if out := mustRun(t, args("plan")...); !strings.Contains(out, "no changes") {
		t.Errorf("plan after apply:\n%s", out)
	}
	var again planJSON
	if err := json.Unmarshal([]byte(mustRun(t, args("plan", "-o", "json")...)), &again); err != nil {
		t.Fatal(err)
	}
	if again.Applied || len(again.Changes) != 0 {
		t.Errorf("plan -o json after apply: %+v", again)
	}
}

// A filter policy is applied, and a change to it shows in the plan.
func TestTopologyFilterPolicy(t *testing.T) {
	t.Parallel()
	ep := requireEmulator(t)
	prefix := uniq("tf") + "-"
	write := func(policy string) string {
		f := filepath.Join(t.TempDir(), "topology.json")
		body := `{"queues": [{"name": "billing", "topics": ["orders"], "visibilityTimeout": 10,
			"filterPolicies": {"orders": ` + policy + `}}]}`
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	first := write(`{"ce_type": ["orders.OrderCreated"]}`)
	out := mustRun(t, "topology", "apply", "-f", first, "-prefix", prefix, "-aws-endpoint", ep)
	if !strings.Contains(out, `FilterPolicy={"ce_type":["orders.OrderCreated"]}`) || !strings.Contains(out, "VisibilityTimeout=10") {
		t.Errorf("apply does not set the filter policy and visibility:\n%s", out)
	}
	// As a string holding JSON, the same policy: nothing to do.
	same := write(`"{\"ce_type\": [\"orders.OrderCreated\"]}"`)
	if out := mustRun(t, "topology", "plan", "-f", same, "-prefix", prefix, "-aws-endpoint", ep); !strings.Contains(out, "no changes") {
		t.Errorf("same policy as a string:\n%s", out)
	}
	changed := write(`{"ce_type": ["orders.OrderCancelled"]}`)
	out = mustRun(t, "topology", "plan", "-f", changed, "-prefix", prefix, "-aws-endpoint", ep)
	if !strings.Contains(out, "update-subscription") || !strings.Contains(out, "OrderCancelled") {
		t.Errorf("changed policy:\n%s", out)
	}
	// A policy on metadata the publishers do not send as an attribute would
	// match nothing: refused unless -attributes says they send it.
	tenant := write(`{"tenant": ["acme"]}`)
	if out, errs, code := edactl(t, "topology", "plan", "-f", tenant, "-prefix", prefix, "-aws-endpoint", ep); code == exitOK || !strings.Contains(errs, `"tenant"`) || !strings.Contains(errs, "Config.Attributes") {
		t.Errorf("policy on tenant with the default attributes: exit %d\n%s%s", code, out, errs)
	}
	out = mustRun(t, "topology", "plan", "-f", tenant, "-prefix", prefix, "-aws-endpoint", ep, "-attributes", "ce_type,tenant")
	if !strings.Contains(out, "update-subscription") || !strings.Contains(out, "tenant") {
		t.Errorf("policy on tenant with -attributes ce_type,tenant:\n%s", out)
	}
}

// iam prints one least-privilege policy per service of the file.
func TestIAM(t *testing.T) {
	t.Parallel()
	out := mustRun(t, "iam", "-f", "testdata/orders-topology.json", "-account", "123456789012", "-region", "eu-west-1")
	for _, want := range []string{
		"# service orders", "# service inventory", "# service notification",
		`"arn:aws:sns:eu-west-1:123456789012:orders"`,
		`"arn:aws:sqs:eu-west-1:123456789012:order-status"`,
		`"sqs:ReceiveMessage"`, `"sns:Publish"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("iam output lacks %q", want)
		}
	}
	for _, bad := range []string{"sqs:CreateQueue", "sns:Subscribe", "SetQueueAttributes", `"*"`} {
		if strings.Contains(out, bad) {
			t.Errorf("iam output grants %s:\n%s", bad, out)
		}
	}

	var policies []struct {
		Name   string                `json:"name"`
		Policy edaaws.PolicyDocument `json:"policy"`
	}
	js := mustRun(t, "iam", "-f", "testdata/orders-topology.json", "-account", "123456789012", "-region", "eu-west-1",
		"-service", "inventory", "-prefix", "prod-", "-o", "json")
	if err := json.Unmarshal([]byte(js), &policies); err != nil {
		t.Fatalf("%v:\n%s", err, js)
	}
	if len(policies) != 1 || policies[0].Name != "inventory" {
		t.Fatalf("-service inventory: %+v", policies)
	}
	want := map[string][]string{
		"PublishToTopics": {"arn:aws:sns:eu-west-1:123456789012:prod-inventory-events", "arn:aws:sns:eu-west-1:123456789012:prod-orders-poison"},
		"ConsumeQueues":   {"arn:aws:sqs:eu-west-1:123456789012:prod-inventory"},
		// Declare with AutoCreate off verifies the DLQ (not readable without
		// readDeadLetters) and the queue's subscription to its topic.
		"VerifyDeadLetterQueues": {"arn:aws:sqs:eu-west-1:123456789012:prod-inventory-dlq"},
		"VerifySubscriptions":    {"arn:aws:sns:eu-west-1:123456789012:prod-orders"},
	}
	got := map[string][]string{}
	for _, st := range policies[0].Policy.Statement {
		got[st.Sid] = st.Resource
	}
	for sid, res := range want {
		if strings.Join(got[sid], " ") != strings.Join(res, " ") {
			t.Errorf("%s resources %v, want %v", sid, got[sid], res)
		}
	}
	if len(got) != len(want) {
		t.Errorf("statements %v, want %v", got, want)
	}
}

// Without -account, iam asks STS (here the emulator's).
func TestIAMAccountFromSTS(t *testing.T) {
	t.Parallel()
	ep := requireEmulator(t)
	out := mustRun(t, "iam", "-f", "testdata/orders-topology.json", "-service", "notification", "-aws-endpoint", ep)
	if !strings.Contains(out, "arn:aws:sqs:us-east-1:000000000000:notification") {
		t.Errorf("iam with the account from STS:\n%s", out)
	}
}

// The deploy role may create and configure, the operator role may read and
// redrive; neither may do what the other does beyond that.
func TestIAMRoles(t *testing.T) {
	t.Parallel()
	base := []string{"iam", "-f", "testdata/orders-topology.json", "-account", "123456789012", "-region", "eu-west-1", "-o", "json"}
	actions := func(role string) map[string]string { // action → its resources
		var out []struct {
			Name   string                `json:"name"`
			Policy edaaws.PolicyDocument `json:"policy"`
		}
		js := mustRun(t, append(base, "-role", role)...)
		if err := json.Unmarshal([]byte(js), &out); err != nil || len(out) != 1 || out[0].Name != role {
			t.Fatalf("-role %s: %v:\n%s", role, err, js)
		}
		m := map[string]string{}
		for _, st := range out[0].Policy.Statement {
			for _, a := range st.Action {
				m[a] += strings.Join(st.Resource, " ") + " "
			}
		}
		return m
	}
	deploy := actions("deploy")
	for _, a := range []string{"sns:CreateTopic", "sns:Subscribe", "sns:SetSubscriptionAttributes", "sqs:CreateQueue", "sqs:SetQueueAttributes"} {
		if deploy[a] == "" {
			t.Errorf("deploy cannot %s", a)
		}
	}
	if !strings.Contains(deploy["sqs:CreateQueue"], "arn:aws:sqs:eu-west-1:123456789012:inventory-dlq ") {
		t.Errorf("deploy cannot create the dead-letter queues: %s", deploy["sqs:CreateQueue"])
	}
	for _, a := range []string{"sqs:DeleteQueue", "sqs:ReceiveMessage", "sqs:SendMessage", "sns:Publish"} {
		if deploy[a] != "" {
			t.Errorf("deploy may %s", a)
		}
	}
	op := actions("operator")
	if !strings.Contains(op["sqs:SendMessage"], ":inventory ") || !strings.Contains(op["sqs:ReceiveMessage"], ":inventory-dlq ") ||
		!strings.Contains(op["sqs:ReceiveMessage"], ":orders-poison ") {
		t.Errorf("operator cannot redrive: send %q, receive %q", op["sqs:SendMessage"], op["sqs:ReceiveMessage"])
	}
	if strings.TrimSpace(op["sqs:DeleteQueue"]) != "arn:aws:sqs:eu-west-1:123456789012:edactl-tail-*" {
		t.Errorf("operator may delete %q, want only tail's queues", op["sqs:DeleteQueue"])
	}
	if op["sqs:SetQueueAttributes"] != op["sqs:DeleteQueue"] || op["sns:CreateTopic"] != "" || op["sns:SetSubscriptionAttributes"] != "" {
		t.Errorf("operator may change the topology: %v", op)
	}
	if _, errs, code := edactl(t, append(base, "-role", "admin")...); code != exitUsage || !strings.Contains(errs, `-role "admin"`) {
		t.Errorf("-role admin: exit %d, %s", code, errs)
	}
}

// With a claim-check bucket, the deploy role may keep its lifecycle rule,
// publishers may put and delete blobs and consumers get them.
func TestIAMClaimCheck(t *testing.T) {
	t.Parallel()
	base := []string{"iam", "-f", "testdata/orders-topology.json", "-account", "123456789012", "-region", "eu-west-1", "-o", "json",
		"-claim-check-bucket", "acme-blobs", "-claim-check-prefix", "orders/"}
	actions := func(args ...string) map[string]map[string]string { // policy → action → its resources
		var out []struct {
			Name   string                `json:"name"`
			Policy edaaws.PolicyDocument `json:"policy"`
		}
		js := mustRun(t, append(base, args...)...)
		if err := json.Unmarshal([]byte(js), &out); err != nil {
			t.Fatalf("%v: %v:\n%s", args, err, js)
		}
		m := map[string]map[string]string{}
		for _, p := range out {
			m[p.Name] = map[string]string{}
			for _, st := range p.Policy.Statement {
				for _, a := range st.Action {
					m[p.Name][a] += strings.Join(st.Resource, " ")
				}
			}
		}
		return m
	}
	if d := actions("-role", "deploy")["deploy"]; d["s3:PutLifecycleConfiguration"] != "arn:aws:s3:::acme-blobs" {
		t.Errorf("deploy: s3:PutLifecycleConfiguration on %q, want the bucket", d["s3:PutLifecycleConfiguration"])
	}
	blobs := "arn:aws:s3:::acme-blobs/orders/*"
	var put, get bool
	for name, p := range actions("-role", "services") {
		put = put || p["s3:PutObject"] == blobs && p["s3:DeleteObject"] == blobs
		get = get || p["s3:GetObject"] == blobs
		if p["s3:PutLifecycleConfiguration"] != "" {
			t.Errorf("service %s may change the lifecycle", name)
		}
	}
	if !put || !get {
		t.Errorf("services: some publisher may put and delete blobs: %t; some consumer may get them: %t", put, get)
	}
}

// topology apply with a claim-check bucket creates it with eda's lifecycle
// rule; a second plan has nothing to do.
func TestTopologyClaimCheckBucket(t *testing.T) {
	t.Parallel()
	ep := requireEmulator(t)
	prefix := uniq("tcc") + "-"
	bucket := uniq("edactl-cc")
	t.Cleanup(func() {
		client := s3.NewFromConfig(awssdk.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")},
			func(o *s3.Options) { o.BaseEndpoint, o.UsePathStyle = &ep, true })
		_, _ = client.DeleteBucket(context.Background(), &s3.DeleteBucketInput{Bucket: &bucket})
	})
	f := filepath.Join(t.TempDir(), "topology.json")
	if err := os.WriteFile(f, []byte(`{"queues": [{"name": "billing", "topics": ["orders"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-f", f, "-prefix", prefix, "-aws-endpoint", ep, "-claim-check-bucket", bucket}
	out := mustRun(t, append([]string{"topology", "apply"}, args...)...)
	if !strings.Contains(out, "create-bucket") || !strings.Contains(out, "put-bucket-lifecycle") ||
		!strings.Contains(out, "s3://"+bucket) || !strings.Contains(out, "expire eda-claim-check/* after 15 days") {
		t.Errorf("apply does not create the bucket with its lifecycle rule:\n%s", out)
	}
	if out := mustRun(t, append([]string{"topology", "plan"}, args...)...); !strings.Contains(out, "no changes") {
		t.Errorf("plan after apply:\n%s", out)
	}
}

// A service marked delayedDelivery may send to the queues subscribed to the
// topics it publishes (the AWS transport's delayed path), and no other; so
// may the relay that publishes its records. Without the mark, no service
// may send to a queue.
func TestIAMDelayedDelivery(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("testdata/orders-topology.json")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "topology.json")
	marked := strings.Replace(string(raw), `"readDeadLetters": true}`, `"readDeadLetters": true, "delayedDelivery": true}`, 1)
	if marked == string(raw) {
		t.Fatal("testdata/orders-topology.json changed: no orders service to mark")
	}
	if err := os.WriteFile(file, []byte(marked), 0o600); err != nil {
		t.Fatal(err)
	}
	sends := func(file, role string) map[string]string { // policy → resources of sqs:SendMessage
		var out []struct {
			Name   string                `json:"name"`
			Policy edaaws.PolicyDocument `json:"policy"`
		}
		js := mustRun(t, "iam", "-f", file, "-account", "123456789012", "-region", "eu-west-1", "-o", "json", "-role", role)
		if err := json.Unmarshal([]byte(js), &out); err != nil {
			t.Fatalf("%v:\n%s", err, js)
		}
		m := map[string]string{}
		for _, p := range out {
			for _, st := range p.Policy.Statement {
				if slices.Contains(st.Action, "sqs:SendMessage") {
					m[p.Name] += strings.Join(st.Resource, " ")
				}
			}
		}
		return m
	}
	want := "arn:aws:sqs:eu-west-1:123456789012:inventory arn:aws:sqs:eu-west-1:123456789012:notification arn:aws:sqs:eu-west-1:123456789012:orders-poison"
	if got := sends(file, "services"); len(got) != 1 || got["orders"] != want {
		t.Errorf("services with orders marked: SendMessage %v, want only orders on %s", got, want)
	}
	if got := sends(file, "relay"); got["relay"] != want {
		t.Errorf("relay: SendMessage on %q, want %s", got["relay"], want)
	}
	if got := sends("testdata/orders-topology.json", "services"); len(got) != 0 {
		t.Errorf("unmarked services may send to queues: %v", got)
	}
}
