package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/internal/awscalls"
)

const (
	evalAccount = "000000000000" // the emulator's
	evalRegion  = "us-east-1"
)

// recordCalls makes every edactl command t runs from now on record its AWS
// calls into a new recorder.
func recordCalls(t *testing.T) *awscalls.Recorder {
	rec := awscalls.New(evalRegion, evalAccount, "")
	configHooks.Store(t, func(cfg *awssdk.Config) { rec.Install(cfg) })
	t.Cleanup(func() { configHooks.Delete(t) })
	return rec
}

func rolePolicy(t *testing.T, file, prefix, role string) any {
	t.Helper()
	var out []namedPolicy
	js := mustRun(t, "iam", "-f", file, "-prefix", prefix, "-role", role, "-account", evalAccount, "-region", evalRegion, "-o", "json")
	if err := json.Unmarshal([]byte(js), &out); err != nil || len(out) != 1 {
		t.Fatalf("iam -role %s: %v:\n%s", role, err, js)
	}
	return out[0].Policy
}

func roleARN(name string) string { return "arn:aws:iam::" + evalAccount + ":role/" + name }

func evalARN(service, name string) string {
	return "arn:aws:" + service + ":" + evalRegion + ":" + evalAccount + ":" + name
}

// checkRecorded evaluates every call of rec as principal under policy: each
// must be allowed, and the recorder must have mapped each.
func checkRecorded(t *testing.T, role string, policy any, rec *awscalls.Recorder) []awscalls.Request {
	t.Helper()
	return awscalls.RecordedRequests(t, role, roleARN(role), evalAccount, policy, rec)
}

// The deploy and operator roles of edactl iam, evaluated by a real IAM
// policy engine against every AWS call topology apply, dlq list/show/
// redrive and tail make on the emulator; and what they must not do.
func TestIAMRolesEvaluated(t *testing.T) {
	awscalls.RequireEngine(t)
	ep := requireEmulator(t)
	prefix := uniq("iam") + "-"
	file := filepath.Join(t.TempDir(), "topology.json")
	// The resources of the dead-letter and tail scenarios (startScenario,
	// tailOnce), under the same prefix.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(file, []byte(`{
  "topics": [{"name": "orders"}, {"name": "poison"}, {"name": "shipments"}],
  "queues": [
    {"name": "inventory", "topics": ["orders"], "maxReceiveCount": 5},
    {"name": "poison", "topics": ["poison"]},
    {"name": "shipping", "topics": ["shipments"]}
  ]
}`), 0o644))
	conn := []string{"-transport", "aws", "-aws-endpoint", ep}
	deploy := rolePolicy(t, file, prefix, roleDeploy)
	operator := rolePolicy(t, file, prefix, roleOperator)

	rec := recordCalls(t)
	mustRun(t, "topology", "apply", "-f", file, "-prefix", prefix, "-aws-endpoint", ep, "-account", evalAccount)
	reqs := checkRecorded(t, "deploy", deploy, rec)

	rec = recordCalls(t)
	tr := awsTransport(t) // the service, not recorded
	s := startScenario(t, tr, prefix)
	poisonAndRedrive(t, s, conn)
	tailOnce(t, tr, prefix, conn, true)
	reqs = append(reqs, checkRecorded(t, "operator", operator, rec)...)

	// Planning and applying again over what exists reads the queues' and
	// subscriptions' attributes; a changed visibility timeout is set.
	rec = recordCalls(t)
	mustRun(t, "topology", "plan", "-f", file, "-prefix", prefix, "-aws-endpoint", ep, "-account", evalAccount)
	changed := filepath.Join(t.TempDir(), "changed.json")
	b, err := os.ReadFile(file)
	must(err)
	must(os.WriteFile(changed, []byte(strings.Replace(string(b), `"maxReceiveCount": 5}`, `"maxReceiveCount": 5, "visibilityTimeout": "45s"}`, 1)), 0o644))
	mustRun(t, "topology", "apply", "-f", changed, "-prefix", prefix, "-aws-endpoint", ep, "-account", evalAccount)
	reqs = append(reqs, checkRecorded(t, "deploy", deploy, rec)...)

	deny := func(role string, policy any, action, resource string) {
		reqs = append(reqs, awscalls.Request{Name: action + " " + resource, Principal: roleARN(role), Action: action,
			Resource: resource, AccountID: evalAccount, Identity: policy})
	}
	other := evalARN("sqs", "someone-else")
	otherTopic := evalARN("sns", "someone-else")
	deny("deploy", deploy, "sqs:DeleteQueue", evalARN("sqs", prefix+"inventory"))
	deny("deploy", deploy, "sns:DeleteTopic", evalARN("sns", prefix+"orders"))
	deny("deploy", deploy, "sqs:CreateQueue", other)
	deny("deploy", deploy, "sqs:ReceiveMessage", evalARN("sqs", prefix+"inventory"))
	deny("deploy", deploy, "sns:Publish", evalARN("sns", prefix+"orders"))
	deny("operator", operator, "sqs:ReceiveMessage", other)
	deny("operator", operator, "sqs:DeleteQueue", evalARN("sqs", prefix+"inventory"))
	deny("operator", operator, "sqs:CreateQueue", evalARN("sqs", prefix+"inventory"))
	deny("operator", operator, "sns:Publish", otherTopic)
	deny("operator", operator, "sns:DeleteTopic", evalARN("sns", prefix+"orders"))
	deny("operator", operator, "sqs:SetQueueAttributes", evalARN("sqs", prefix+"inventory"))

	// SNS delivers to each queue under the queue policy topology apply wrote.
	for _, d := range []struct{ queue, topic string }{{"inventory", "orders"}, {"poison", "poison"}, {"shipping", "shipments"}} {
		reqs = append(reqs, deliveries(t, tr, prefix+d.queue, evalARN("sns", prefix+d.topic), otherTopic)...)
	}
	awscalls.Evaluate(t, reqs)
}

// deliveries are the requests of SNS sending to queue: allowed from topic,
// denied from other, under the queue's policy as SQS has it.
func deliveries(t *testing.T, tr interface{ SQS() *sqs.Client }, queue, topic, other string) []awscalls.Request {
	t.Helper()
	ctx := testContext(t)
	url, err := tr.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &queue})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := tr.SQS().GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: url.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNamePolicy}})
	if err != nil {
		t.Fatal(err)
	}
	var policy any
	if err := json.Unmarshal([]byte(attrs.Attributes["Policy"]), &policy); err != nil {
		t.Fatalf("queue %s: policy %q: %v", queue, attrs.Attributes["Policy"], err)
	}
	var out []awscalls.Request
	for _, src := range []string{topic, other} {
		out = append(out, awscalls.Request{Name: "SNS delivery from " + src, Principal: "sns.amazonaws.com",
			Action: "sqs:SendMessage", Resource: evalARN("sqs", queue), AccountID: evalAccount,
			Context: map[string]string{"aws:SourceArn": src, "aws:SourceAccount": evalAccount}, ResourcePolicy: policy,
			Allow: src == topic})
	}
	return out
}
