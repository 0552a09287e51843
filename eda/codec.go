package eda

import "encoding/json"

// Codec encodes events into payloads and back. It must be safe for
// concurrent use.
type Codec interface {
	// ContentType is the MIME type written into MetadataContentType
	// (CloudEvents "datacontenttype").
	ContentType() string
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default codec: encoding/json, "application/json".
type JSON struct{}

// ContentType returns "application/json".
func (JSON) ContentType() string { return "application/json" }

// Marshal encodes v with encoding/json.
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes data with encoding/json.
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
