package aws

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestQueuePolicyKeepsOtherStatements(t *testing.T) {
	existing := `{"Version":"2012-10-17","Statement":[
		{"Sid":"ops","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::1:role/ops"},"Action":"sqs:PurgeQueue","Resource":"q"},
		{"Sid":"eda-sns-to-sqs","Effect":"Allow","Principal":{"Service":"sns.amazonaws.com"},"Action":"sqs:SendMessage","Resource":"q","Condition":{"ArnEquals":{"aws:SourceArn":"old"}}}]}`
	if got := policySourceARNs(existing); !slices.Equal(got, []string{"old"}) {
		t.Fatalf("source ARNs %v, want [old]", got)
	}
	p, err := queuePolicy("q", []string{"t2", "t1"}, existing)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Statement []map[string]any }
	if err := json.Unmarshal([]byte(p), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Statement) != 2 || doc.Statement[0]["Sid"] != "ops" {
		t.Fatalf("policy %s: want the ops statement kept and ours replaced", p)
	}
	if got := policySourceARNs(p); !slices.Equal(got, []string{"t1", "t2"}) {
		t.Errorf("source ARNs %v, want [t1 t2]", got)
	}
	if _, err := queuePolicy("q", nil, "{"); err == nil {
		t.Error("broken existing policy: no error")
	}
	if !sameJSON(`{"maxReceiveCount":"5","a":[1]}`, `{"a":[1],"maxReceiveCount":5}`) || sameJSON(`{"a":1}`, `{"a":2}`) || sameJSON("", "{}") {
		t.Error("sameJSON")
	}
}
