package postgres

import (
	"bytes"
	"errors"
	"maps"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

// FuzzDecodeMetadata: the metadata column as read back from the table (or
// written there by another tool) decodes or fails with errCorruptMetadata,
// never panics (a key twice is corrupt too); what decodes encodes back to
// the same metadata.
func FuzzDecodeMetadata(f *testing.F) {
	for _, md := range []message.Metadata{
		{},
		{"ce_id": "id-1", "ce_type": "orders.Placed"},
		{"": ""},
		{"nul": "a\x00b", "bad": "\xff\xfe", "long": string(bytes.Repeat([]byte("x"), 300))},
	} {
		f.Add(EncodeMetadata(md))
	}
	for _, b := range [][]byte{{0x01}, {0x05, 'a'}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, {0x01, 'k', 0x80}} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		md, err := DecodeMetadata(b)
		if err != nil {
			if !errors.Is(err, errCorruptMetadata) {
				t.Fatalf("error %v is not errCorruptMetadata", err)
			}
			return
		}
		enc := EncodeMetadata(md)
		again, err := DecodeMetadata(enc)
		if err != nil || !maps.Equal(md, again) {
			t.Fatalf("%q decodes to %q; re-encoded it decodes to %q, %v", b, md, again, err)
		}
	})
}

// FuzzEncodeMetadata: any metadata, NUL and invalid UTF-8 included, comes
// back byte for byte.
func FuzzEncodeMetadata(f *testing.F) {
	f.Add("ce_id", "id-1", "k", "v")
	f.Add("", "", "\x00", "\xff")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		md := message.Metadata{k1: v1, k2: v2}
		got, err := DecodeMetadata(EncodeMetadata(md))
		if err != nil || !maps.Equal(md, got) {
			t.Fatalf("%q came back as %q, %v", md, got, err)
		}
	})
}
