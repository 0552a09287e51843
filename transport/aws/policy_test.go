package aws_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

func TestServicePolicy(t *testing.T) {
	doc, err := edaaws.ServicePolicy(edaaws.ServiceAccess{
		Region:    "eu-west-1",
		AccountID: "123456789012",
		Publishes: []edaaws.Topic{{Name: "orders"}, {Name: "payments", FIFO: true}, {Name: "orders"}},
		Consumes: []transport.Queue{
			{Name: "inventory", Topics: []string{"orders"}, MaxReceiveCount: 5},
			{Name: "ledger", Topics: []string{"payments"}, FIFO: true},
		},
		ReadDeadLetters: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	text := doc.JSON()
	// The document is valid JSON in the IAM shape.
	var back edaaws.PolicyDocument
	if err := json.Unmarshal([]byte(text), &back); err != nil {
		t.Fatalf("policy is not JSON: %v\n%s", err, text)
	}
	// Publish, consume, and verify the consumed queues' subscriptions (which
	// Declare does with AutoCreate off; the DLQs are readable, so no
	// verify-only DLQ statement). internal/awscalls proves them sufficient.
	if back.Version != "2012-10-17" || len(back.Statement) != 3 {
		t.Fatalf("policy has version %q and %d statements, want 2012-10-17 and 3:\n%s", back.Version, len(back.Statement), text)
	}
	pub, con, sub := back.Statement[0], back.Statement[1], back.Statement[2]
	wantSub := edaaws.Statement{
		Sid: "VerifySubscriptions", Effect: "Allow",
		Action:   edaaws.StringList{"sns:GetSubscriptionAttributes", "sns:GetTopicAttributes", "sns:ListSubscriptionsByTopic"},
		Resource: edaaws.StringList{"arn:aws:sns:eu-west-1:123456789012:orders", "arn:aws:sns:eu-west-1:123456789012:payments.fifo"},
	}
	if sub.Sid != wantSub.Sid || !slices.Equal(sub.Action, wantSub.Action) || !slices.Equal(sub.Resource, wantSub.Resource) {
		t.Errorf("subscriptions statement %+v, want %+v", sub, wantSub)
	}
	wantPub := edaaws.Statement{
		Sid: "PublishToTopics", Effect: "Allow",
		Action:   edaaws.StringList{"sns:GetTopicAttributes", "sns:ListSubscriptionsByTopic", "sns:Publish"},
		Resource: edaaws.StringList{"arn:aws:sns:eu-west-1:123456789012:orders", "arn:aws:sns:eu-west-1:123456789012:payments.fifo"},
	}
	if pub.Sid != wantPub.Sid || pub.Effect != wantPub.Effect || !slices.Equal(pub.Action, wantPub.Action) || !slices.Equal(pub.Resource, wantPub.Resource) {
		t.Errorf("publish statement %+v, want %+v", pub, wantPub)
	}
	wantCon := edaaws.Statement{
		Sid: "ConsumeQueues", Effect: "Allow",
		Action: edaaws.StringList{"sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ReceiveMessage"},
		Resource: edaaws.StringList{
			"arn:aws:sqs:eu-west-1:123456789012:inventory",
			"arn:aws:sqs:eu-west-1:123456789012:inventory-dlq",
			"arn:aws:sqs:eu-west-1:123456789012:ledger.fifo",
		},
	}
	if con.Sid != wantCon.Sid || con.Effect != wantCon.Effect || !slices.Equal(con.Action, wantCon.Action) || !slices.Equal(con.Resource, wantCon.Resource) {
		t.Errorf("consume statement %+v, want %+v", con, wantCon)
	}
	// Least privilege: no wildcard, no management rights.
	for _, bad := range []string{`"*"`, ":*", "sqs:*", "sns:*", "CreateTopic", "CreateQueue", "Subscribe", "SetQueueAttributes", "DeleteQueue", "SendMessage"} {
		if strings.Contains(text, bad) {
			t.Errorf("policy contains %s:\n%s", bad, text)
		}
	}

	// Without ReadDeadLetters the DLQ is not readable: Declare only
	// verifies it (get URL and attributes).
	doc, err = edaaws.ServicePolicy(edaaws.ServiceAccess{
		Region: "eu-west-1", AccountID: "123456789012", Partition: "aws-cn",
		Consumes: []transport.Queue{{Name: "inventory", MaxReceiveCount: 5}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.Statement) != 2 || !slices.Equal(doc.Statement[0].Resource, edaaws.StringList{"arn:aws-cn:sqs:eu-west-1:123456789012:inventory"}) ||
		doc.Statement[1].Sid != "VerifyDeadLetterQueues" || !slices.Equal(doc.Statement[1].Action, edaaws.StringList{"sqs:GetQueueAttributes", "sqs:GetQueueUrl"}) ||
		!slices.Equal(doc.Statement[1].Resource, edaaws.StringList{"arn:aws-cn:sqs:eu-west-1:123456789012:inventory-dlq"}) {
		t.Errorf("consume-only policy: %s", doc.JSON())
	}
}

func TestServicePolicyValidation(t *testing.T) {
	_, err := edaaws.ServicePolicy(edaaws.ServiceAccess{Consumes: []transport.Queue{{Name: ""}}})
	for _, want := range []error{edaaws.ErrMissingRegion, transport.ErrInvalidConfig} {
		if !errors.Is(err, want) {
			t.Errorf("ServicePolicy of nothing: %v, want %v", err, want)
		}
	}
	for _, s := range []string{"account id", "queue name is empty"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	if _, err := edaaws.ServicePolicy(edaaws.ServiceAccess{Region: "r", AccountID: "a"}); !errors.Is(err, transport.ErrInvalidConfig) {
		t.Errorf("ServicePolicy with no access: %v, want ErrInvalidConfig", err)
	}
}

func TestStringList(t *testing.T) {
	var st edaaws.Statement
	if err := json.Unmarshal([]byte(`{"Effect":"Allow","Action":"sqs:SendMessage","Resource":["a","b"]}`), &st); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.Action, edaaws.StringList{"sqs:SendMessage"}) || !slices.Equal(st.Resource, edaaws.StringList{"a", "b"}) {
		t.Errorf("got %+v", st)
	}
	if err := json.Unmarshal([]byte(`{"Action":3}`), &st); err == nil {
		t.Error("number as action: no error")
	}
}

func TestServicePolicyClaimCheck(t *testing.T) {
	cc := edaaws.ClaimCheckConfig{Bucket: "acme-blobs", Prefix: "orders/"}
	base := edaaws.ServiceAccess{Region: "eu-west-1", AccountID: "123456789012"}
	s3Actions := func(a edaaws.ServiceAccess) map[string]string { // action → resources
		t.Helper()
		doc, err := edaaws.ServicePolicy(a)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, st := range doc.Statement {
			for _, act := range st.Action {
				if strings.HasPrefix(act, "s3:") {
					m[act] = strings.Join(st.Resource, " ")
				}
			}
		}
		return m
	}
	blobs := "arn:aws:s3:::acme-blobs/orders/*"
	for _, tc := range []struct {
		name string
		a    func(edaaws.ServiceAccess) edaaws.ServiceAccess
		want map[string]string
	}{
		{"publisher", func(a edaaws.ServiceAccess) edaaws.ServiceAccess {
			a.Publishes, a.ClaimCheck = []edaaws.Topic{{Name: "orders"}}, cc
			return a
		}, map[string]string{"s3:PutObject": blobs, "s3:DeleteObject": blobs}},
		{"consumer", func(a edaaws.ServiceAccess) edaaws.ServiceAccess {
			a.Consumes, a.ClaimCheck = []transport.Queue{{Name: "inventory", Topics: []string{"orders"}}}, cc
			return a
		}, map[string]string{"s3:GetObject": blobs}},
		{"default prefix", func(a edaaws.ServiceAccess) edaaws.ServiceAccess {
			a.Consumes, a.ClaimCheck = []transport.Queue{{Name: "inventory", Topics: []string{"orders"}}}, edaaws.ClaimCheckConfig{Bucket: "acme-blobs"}
			return a
		}, map[string]string{"s3:GetObject": "arn:aws:s3:::acme-blobs/" + edaaws.DefaultClaimCheckPrefix + "*"}},
		{"no bucket", func(a edaaws.ServiceAccess) edaaws.ServiceAccess {
			a.Publishes = []edaaws.Topic{{Name: "orders"}}
			a.Consumes = []transport.Queue{{Name: "inventory", Topics: []string{"orders"}}}
			return a
		}, map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := s3Actions(tc.a(base))
			if len(got) != len(tc.want) {
				t.Errorf("S3 actions %v, want %v", got, tc.want)
			}
			for act, res := range tc.want {
				if got[act] != res {
					t.Errorf("%s on %q, want %q (all: %v)", act, got[act], res, got)
				}
			}
		})
	}
	st := edaaws.ClaimCheckDeployStatement("", cc)
	if !slices.Contains(st.Action, "s3:PutLifecycleConfiguration") || !slices.Equal(st.Resource, edaaws.StringList{"arn:aws:s3:::acme-blobs"}) {
		t.Errorf("deploy statement %+v: want s3:PutLifecycleConfiguration on the bucket", st)
	}
}
