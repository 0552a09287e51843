package main

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzDecodeOrder: any POST /orders body decodes to an order that passes
// checkOrder, every text in it valid UTF-8 without control characters, or
// fails with errBadRequest or errBadOrder; a decoded order encodes and
// decodes back to itself.
func FuzzDecodeOrder(f *testing.F) {
	for _, c := range badInput {
		if len(c.body) < 4096 {
			f.Add([]byte(c.body))
		}
	}
	f.Add([]byte(`{"id":"o-1","customer_id":"c","items":[{"sku":"sku-fig","qty":1},{"sku":"sku-pear","qty":2}]}`))
	f.Add([]byte(`{"customer_id":"\u00e9\ud83d\ude00","items":[{"sku":"sku-\u2028","qty":1}]}`))
	f.Add([]byte(`{"customer_id":"c","items":[{"sku":"s","qty":1}],"id":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeOrder(body)
		if err != nil {
			if !errors.Is(err, errBadRequest) && !errors.Is(err, errBadOrder) {
				t.Fatalf("error %v is neither errBadRequest nor errBadOrder", err)
			}
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("error message is not UTF-8: %q", err)
			}
			return
		}
		texts := []string{req.ID, req.CustomerID}
		for _, it := range req.Items {
			texts = append(texts, it.SKU)
		}
		for _, s := range texts {
			if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 || strings.ContainsRune(s, utf8.RuneError) && !utf8.Valid(body) {
				t.Fatalf("accepted text %q from %q", s, body)
			}
		}
		if err := checkOrder(req); err != nil {
			t.Fatalf("accepted an order checkOrder refuses: %v", err)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeOrder(b)
		if err != nil || !reflect.DeepEqual(again, req) {
			t.Fatalf("%s decodes to %+v; re-encoded as %s it decodes to %+v, %v", body, req, b, again, err)
		}
	})
}
