package postgres

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Metadata is stored as bytea: a sequence of (uvarint length, key, uvarint
// length, value). JSON would be readable in psql but cannot hold every Go
// string: encoding/json replaces invalid UTF-8, jsonb rejects \u0000. A
// transport must give back the bytes it was given.

var errCorruptMetadata = errors.New("postgres transport: corrupt metadata column")

// EncodeMetadata encodes md as the transport stores it in the messages
// table's metadata column. Tools that read or write that table directly
// (edactl's dlq commands) use it and DecodeMetadata.
func EncodeMetadata(md message.Metadata) []byte {
	n := 0
	for k, v := range md {
		n += len(k) + len(v) + 2*binary.MaxVarintLen32
	}
	b := make([]byte, 0, n)
	for k, v := range md {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

// DecodeMetadata decodes the metadata column; see EncodeMetadata.
func DecodeMetadata(b []byte) (message.Metadata, error) {
	md := message.Metadata{}
	next := func() (string, error) {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) {
			return "", errCorruptMetadata
		}
		s := string(b[w : w+int(n)])
		b = b[w+int(n):]
		return s, nil
	}
	for len(b) > 0 {
		k, err := next()
		if err != nil {
			return nil, err
		}
		v, err := next()
		if err != nil {
			return nil, err
		}
		if _, dup := md[k]; dup {
			// EncodeMetadata writes each key once; taking one of
			// two values would hide the corruption.
			return nil, fmt.Errorf("%w: key %q twice", errCorruptMetadata, k)
		}
		md[k] = v
	}
	return md, nil
}
