package aws

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	wmsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
)

// The wire format. watermill-aws's marshalers put every metadata entry in a
// message attribute; eda needs more, so this codec replaces them (the
// attribute names stay compatible: a watermill-aws subscriber reads the
// UUID and the attributes):
//   - Only the metadata named in Config.Attributes (by default the
//     CloudEvents id, source, specversion, type and time: what a consumer
//     in another language looks for and filter policies match on) are
//     message attributes of their own; the rest travels as one JSON object
//     in attrOverflow. Every attribute costs SNS and SQS work per message
//     (PublishBatch with the whole envelope as attributes ran at two thirds
//     of the throughput on the emulator; cmd/outboxbench). AllAttributes
//     sends as many as fit instead, envelope first.
//   - SQS delivers at most 10 message attributes and rejects empty values
//     and some names; such metadata goes to attrOverflow too.
//   - SQS bodies must be XML-safe Unicode; a payload that is not (binary
//     codecs) is sent base64-encoded, marked by attrEncoding.
//   - The UUID attribute is left out when the UUID equals the event id
//     (ce_id), which is how eda builds messages: one attribute slot more.
//   - The group id and dedup id go to MessageGroupId and
//     MessageDeduplicationId and also stay in the metadata.
const (
	attrUUID       = wmsqs.UUIDAttribute // "_watermill_message_uuid"
	attrOverflow   = "eda_md"
	attrEncoding   = "eda_enc"
	attrClaimCheck = "eda_claimcheck"
	encodingBase64 = "base64"
	encodingEmpty  = "empty"
	stringType     = "String"
	claimCheckBody = "eda-claim-check:" // body of a claim-checked message, then the key
	allAttributes  = "*"
)

// ErrInvalidMetadata: a message's metadata cannot be sent as it is (SQS
// message attributes and eda_md carry Unicode text only, and encoding/json
// would replace invalid UTF-8 silently).
var ErrInvalidMetadata = errors.New("aws: invalid metadata")

// attrPriority orders metadata keys for the attribute slots under
// AllAttributes: the envelope first, then the rest by name.
var attrPriority = []string{
	"ce_type", "ce_source", transport.MetadataEventID, "ce_specversion", "ce_time",
	"ce_datacontenttype", "ce_schemaversion", transport.MetadataGroupID,
	"ce_correlationid", "ce_causationid",
}

// wireMessage is a message as SNS/SQS carry it.
type wireMessage struct {
	body  string
	attrs map[string]string // all of data type String
}

// size is what SNS/SQS count: body plus attribute names, types and values.
func (w wireMessage) size() int {
	n := len(w.body)
	for k, v := range w.attrs {
		n += len(k) + len(stringType) + len(v)
	}
	return n
}

// encode turns msg into its wire form: the metadata named in attrs (or all
// that fit, for AllAttributes) as attributes of their own. claimKey, when
// set, replaces the payload with a claim-check pointer.
func encode(msg *message.Message, claimKey string, attrs []string) (wireMessage, error) {
	w := wireMessage{attrs: map[string]string{}}
	switch {
	case claimKey != "":
		if !validText(claimKey) {
			return wireMessage{}, fmt.Errorf("%w: message %s: claim-check key %q is not SQS text", ErrInvalidMetadata, msg.UUID, claimKey)
		}
		w.body = claimCheckBody + claimKey
		w.attrs[attrClaimCheck] = claimKey
	case len(msg.Payload) == 0:
		// SNS and SQS reject an empty body.
		w.body = " "
		w.attrs[attrEncoding] = encodingEmpty
	case validBody(msg.Payload):
		w.body = string(msg.Payload)
	default:
		w.body = base64.StdEncoding.EncodeToString(msg.Payload)
		w.attrs[attrEncoding] = encodingBase64
	}
	if msg.UUID != msg.Metadata.Get(transport.MetadataEventID) {
		if msg.UUID == "" || !validText(msg.UUID) {
			return wireMessage{}, fmt.Errorf("%w: message UUID %q cannot be a message attribute", ErrInvalidMetadata, msg.UUID)
		}
		w.attrs[attrUUID] = msg.UUID
	}

	all := slices.Contains(attrs, allAttributes)
	keys := make([]string, 0, len(msg.Metadata))
	var overflow map[string]string
	for k, v := range msg.Metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return wireMessage{}, fmt.Errorf("%w: message %s: metadata %q=%q is not valid UTF-8", ErrInvalidMetadata, msg.UUID, k, v)
		}
		if (all || slices.Contains(attrs, k)) && validAttrName(k) && v != "" && validText(v) {
			keys = append(keys, k)
			continue
		}
		if overflow == nil {
			overflow = map[string]string{}
		}
		overflow[k] = v
	}
	slices.SortFunc(keys, func(a, b string) int {
		pa, pb := priority(a), priority(b)
		if pa != pb {
			return pa - pb
		}
		return strings.Compare(a, b)
	})
	slots := MaxAttributes - len(w.attrs)
	if overflow != nil || len(keys) > slots {
		slots-- // one for attrOverflow
	}
	for i, k := range keys {
		if i < slots {
			w.attrs[k] = msg.Metadata[k]
			continue
		}
		if overflow == nil {
			overflow = map[string]string{}
		}
		overflow[k] = msg.Metadata[k]
	}
	if overflow != nil {
		b, err := json.Marshal(overflow)
		if err != nil {
			return wireMessage{}, fmt.Errorf("aws: encode metadata of message %s: %w", msg.UUID, err)
		}
		w.attrs[attrOverflow] = string(b)
	}
	return w, nil
}

func priority(k string) int {
	if i := slices.Index(attrPriority, k); i >= 0 {
		return i
	}
	return len(attrPriority)
}

// decoded is a received message before its claim check, if any, is resolved.
type decoded struct {
	msg      *message.Message
	claimKey string
}

// decode reads a message in the wire form; it accepts messages sent by
// others too (no eda attributes: the SQS message id is the UUID).
func decode(body string, attrs map[string]string, messageID string) (decoded, error) {
	return decodeAttrs(body, attrs, func(v string) (string, bool) { return v, true }, 0, messageID)
}

// decodeAttrs is decode over attributes of any type, text giving the text
// of each (false: none; the attribute is skipped), so that a received
// message's are read in place, with no map of them built; the metadata has
// room for extra entries more (what the subscriber adds).
func decodeAttrs[V any](body string, attrs map[string]V, text func(V) (string, bool), extra int, messageID string) (decoded, error) {
	// The message's own (empty) metadata map holds up to 8 entries in the
	// one group it allocates on the first insert; a map sized up front
	// saves the growing steps of a bigger one.
	d := decoded{msg: message.NewMessage("", nil)}
	md := d.msg.Metadata
	if n := len(attrs) + extra; n > 8 {
		md = make(message.Metadata, n)
		d.msg.Metadata = md
	}
	var uuid, encoding, overflow string
	hasOverflow := false
	for k, a := range attrs {
		v, ok := text(a)
		if !ok {
			continue
		}
		switch k {
		case attrUUID:
			uuid = v
		case attrEncoding:
			encoding = v
		case attrOverflow:
			overflow, hasOverflow = v, true
		case attrClaimCheck:
			d.claimKey = v
		default:
			md[k] = v
		}
	}
	if hasOverflow {
		// Into md itself (encoding/json adds to a non-nil map), the overflow
		// entries replacing attributes of the same name; through a copy of
		// the map value, which a JSON null sets to nil.
		into := md
		if err := json.Unmarshal([]byte(overflow), &into); err != nil {
			return decoded{}, fmt.Errorf("aws: message %s: attribute %s: %w", messageID, attrOverflow, err)
		}
	}
	var payload []byte
	switch encoding {
	case encodingEmpty:
		payload = []byte{}
	case encodingBase64:
		var err error
		if payload, err = base64.StdEncoding.DecodeString(body); err != nil {
			return decoded{}, fmt.Errorf("aws: message %s: base64 body: %w", messageID, err)
		}
	default:
		if d.claimKey == "" {
			payload = []byte(body)
		}
	}
	if d.claimKey != "" {
		payload = nil
	}
	if uuid == "" {
		uuid = md.Get(transport.MetadataEventID)
	}
	if uuid == "" {
		uuid = messageID
	}
	d.msg.UUID, d.msg.Payload = uuid, payload
	return d, nil
}

// validBody reports whether SQS accepts b as a body: valid UTF-8 of the
// characters #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF.
func validBody(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !validRune(r) {
			return false
		}
	}
	return true
}

func validText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !validRune(r) {
			return false
		}
	}
	return true
}

func validRune(r rune) bool {
	return r == 0x9 || r == 0xA || r == 0xD || (r >= 0x20 && r <= 0xD7FF) ||
		(r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
}

// validAttrName reports whether SQS accepts name as a message attribute
// name, and it is not one this codec uses itself.
func validAttrName(name string) bool {
	switch name {
	case attrUUID, attrOverflow, attrEncoding, attrClaimCheck:
		return false
	}
	if name == "" || len(name) > 256 || name[0] == '.' || name[len(name)-1] == '.' || strings.Contains(name, "..") {
		return false
	}
	lower := strings.ToLower(name)
	if strings.HasPrefix(lower, "aws.") || strings.HasPrefix(lower, "amazon.") {
		return false
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.'
		if !ok {
			return false
		}
	}
	return true
}

// DecodeSQS reads an SQS message (its body and String message attributes) in
// the form this transport sends, for tools that inspect queues without
// consuming through a Transport (edactl's dlq commands). A claim-checked
// message comes back with a nil payload and its blob key in claimKey.
func DecodeSQS(body string, attrs map[string]string) (msg *message.Message, claimKey string, err error) {
	d, err := decode(body, attrs, "")
	if err != nil {
		return nil, "", err
	}
	return d.msg, d.claimKey, nil
}

// EncodeSQS is the inverse of DecodeSQS: the body and String message
// attributes a transport with DefaultAttributes would send for msg
// (claimKey: the blob key of a claim-checked payload, or "").
func EncodeSQS(msg *message.Message, claimKey string) (body string, attrs map[string]string, err error) {
	w, err := encode(msg, claimKey, DefaultAttributes)
	if err != nil {
		return "", nil, err
	}
	return w.body, w.attrs, nil
}
