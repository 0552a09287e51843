package outbox

import (
	"encoding/json"
	"maps"
	"testing"
)

// The reflection-free parser agrees with encoding/json on everything it
// takes, and takes what Postgres's jsonb output and MarshalMetadata write.
func FuzzParseMetadata(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { } `, `{"a": "b"}`, `{"ce_id": "x", "ce_type": "orders.created"}`,
		`{"q": "say \"hi\"", "p": "C:\\dir\/x", "c": "\b\f\n\r\t\u0000\u001f", "u": "\u00e9\u2028✓"}`,
		`{"a":"1","a":"2"}`, `{"s": "\ud83d\ude00"}`, `{"bad": "\ud800"}`, `{"n": 1}`, `{"a": "b",}`,
		`null`, `{"a": "b"} x`, "{\"a\": \"\xff\"}", `{"a": "b"`, `{"a" "b"}`, `{"a": "\x"}`, `{"a": "\u12"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := parseMetadata(b)
		var want map[string]string
		err := json.Unmarshal(b, &want)
		if ok && (err != nil || !maps.Equal(map[string]string(got), want)) {
			t.Fatalf("parseMetadata(%q) = %q; encoding/json: %q, %v", b, got, want, err)
		}
		md, err2 := UnmarshalMetadata(b)
		if len(b) > 0 && (err == nil) != (err2 == nil) || err == nil && len(b) > 0 && want != nil && !maps.Equal(map[string]string(md), want) {
			t.Fatalf("UnmarshalMetadata(%q) = %q, %v; encoding/json: %q, %v", b, md, err2, want, err)
		}
	})
}

// The parser takes the usual forms instead of leaving them to encoding/json.
func TestParseMetadataTakes(t *testing.T) {
	for _, s := range []string{
		`{}`,
		`{"ce_id": "01a21350-7a88-78e4-9d8d-d3fc5aa8037b", "ce_time": "2026-11-25T15:26:11.080583211Z", "ce_type": "bench.order_placed"}`,
		`{"q":"say \"hi\"","c":"a\nb\u0001","u":"héllo ✓"}`,
	} {
		if _, ok := parseMetadata([]byte(s)); !ok {
			t.Errorf("parseMetadata(%s) left it to encoding/json", s)
		}
	}
	md, err := UnmarshalMetadata([]byte(`{"e": "\u00e9\/", "k": "v"}`))
	if err != nil || md["e"] != "é/" || md["k"] != "v" || len(md) != 2 {
		t.Errorf("UnmarshalMetadata = %q, %v", md, err)
	}
}
