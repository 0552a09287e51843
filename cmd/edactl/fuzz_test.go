package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzTopologyFile: whatever the topology file holds, loadTopology returns
// it checked or an errUsage error; a loaded file converts to a valid
// Topology whose filter policies are JSON objects, and its deploy and
// operator IAM policies are JSON.
func FuzzTopologyFile(f *testing.F) {
	for _, name := range []string{"orders-topology.json", "bad-references.json", "bad-unknown-field.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "")
		f.Add(b, "pr-1-")
	}
	f.Add([]byte(`{"queues":[{"name":"q","topics":["t"],"visibilityTimeout":12.5,"filterPolicies":{"t":"{\"ce_type\":[\"a\"]}"}}]}`), "")
	f.Add([]byte(`{"queues":[{"name":"q","topics":["t"],"filterPolicies":{"t":{"n":[{"numeric":[">",12345678901234567890]}]}}}]}`), "")
	f.Add([]byte(`{"topics":[{"name":"t","fifo":true}],"queues":[{"name":"q","fifo":true,"topics":["t"],"visibilityTimeout":"-1s"}]}`), "")
	f.Add([]byte(`{"topics":[{"name":"t"}]} {}`), "")
	f.Add([]byte(`null`), "x")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte, prefix string) {
		path := filepath.Join(dir, "topology.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		tf, err := loadTopology(path, prefix)
		if err != nil {
			if !errors.Is(err, errUsage) {
				t.Fatalf("error %v is not errUsage", err)
			}
			return
		}
		tp, err := tf.topology()
		if err != nil {
			t.Fatalf("loaded, but topology(): %v", err)
		}
		if err := tp.Validate(); err != nil {
			t.Fatalf("loaded, but Validate: %v", err)
		}
		for _, q := range tp.Queues {
			for topic, p := range q.FilterPolicies {
				var obj map[string]any
				if err := json.Unmarshal([]byte(p), &obj); err != nil {
					t.Fatalf("queue %s: filter policy for %s is not a JSON object: %q", q.Name, topic, p)
				}
			}
		}
		a := arnBuilder{partition: "aws", region: "eu-west-1", account: "123456789012"}
		for _, doc := range []string{deployPolicy(tf, a).JSON(), operatorPolicy(tf, a).JSON()} {
			if !json.Valid([]byte(doc)) {
				t.Fatalf("IAM policy is not JSON: %s", doc)
			}
		}
	})
}

// FuzzFilterPolicy: a subscription filter policy (an object, or a string
// holding one) is sent as the same JSON, compacted: no number rounded, no
// text rewritten; anything else is an error.
func FuzzFilterPolicy(f *testing.F) {
	for _, s := range []string{
		`{"ce_type":["orders.Placed"]}`, `"{\"ce_type\":[\"a\"]}"`, `{"n":[{"numeric":[">",12345678901234567890]}]}`,
		`{"n":[{"numeric":["=",1.0e2]}]}`, `{"s":["\u00e9\ud800"]}`, "{\"s\":[\"\xff\"]}", `[]`, `"x"`, `{"a":1,"a":2}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := filterPolicy(raw)
		if err != nil {
			return
		}
		inner := raw
		var s string
		if json.Unmarshal(raw, &s) == nil {
			inner = []byte(s)
		}
		want, got := decodeNumbers(t, inner), decodeNumbers(t, []byte(p))
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("filter policy %s is sent as %s", inner, p)
		}
		if again, err := filterPolicy([]byte(p)); err != nil || again != p {
			t.Fatalf("filterPolicy(%s) = %s, %v; not idempotent", p, again, err)
		}
	})
}

func decodeNumbers(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return v
}
