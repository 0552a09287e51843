package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of POST /orders beyond the body size.
const (
	maxItems = 100  // items per order
	maxQty   = 1000 // quantity of one item
	maxText  = 128  // bytes of an id, customer id or sku
)

var (
	// errBadRequest is a body that is not an order: malformed JSON, a
	// wrong type, an unknown field, text that is not clean UTF-8 (400).
	errBadRequest = errors.New("bad request")
	// errBadOrder is a well-formed order that is not acceptable (422).
	errBadOrder = errors.New("invalid order")
	// errOrderConflict is a known order id with another body (409).
	errOrderConflict = errors.New("order conflict")
)

// decodeOrder decodes a POST /orders body and checks what it can without the
// database. Every error wraps errBadRequest or errBadOrder and names the
// field. encoding/json rewrites invalid UTF-8 and lone surrogate escapes to
// U+FFFD and takes the last of repeated fields, silently, so the raw body is
// checked first (checkJSON) and only then decoded.
func decodeOrder(body []byte) (orderRequest, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return orderRequest{}, fmt.Errorf("%w: empty body: want a JSON order object", errBadRequest)
	}
	if err := checkJSON(body); err != nil {
		return orderRequest{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields() // a typo in a field name is an error, not a silently ignored field
	var req orderRequest
	if err := dec.Decode(&req); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			field := typeErr.Field
			if field == "" {
				field = "body"
			}
			return orderRequest{}, fmt.Errorf("%w: %s: want %s, got %s", errBadRequest, field, jsonKind(typeErr.Type), typeErr.Value)
		}
		// Syntax errors were found by checkJSON; what is left is an
		// unknown field ("json: unknown field \"x\"").
		return orderRequest{}, fmt.Errorf("%w: %s", errBadRequest, strings.TrimPrefix(err.Error(), "json: "))
	}
	if err := checkOrder(req); err != nil {
		return orderRequest{}, err
	}
	return req, nil
}

// jsonKind names a Go type as the JSON a client should send.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return t.String()
}

// checkOrder checks the fields of a decoded order (not the catalogue).
func checkOrder(req orderRequest) error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if req.ID != "" && strings.TrimSpace(req.ID) == "" {
		add("id: blank (leave it out to have one generated)")
	}
	if len(req.ID) > maxText {
		add("id: at most %d bytes, got %d", maxText, len(req.ID))
	}
	if strings.TrimSpace(req.CustomerID) == "" {
		add("customer_id: required")
	} else if len(req.CustomerID) > maxText {
		add("customer_id: at most %d bytes, got %d", maxText, len(req.CustomerID))
	}
	switch {
	case len(req.Items) == 0:
		add("items: at least one item is required")
	case len(req.Items) > maxItems:
		add("items: at most %d items, got %d", maxItems, len(req.Items))
	}
	for i, it := range req.Items {
		if i == maxItems {
			break
		}
		switch {
		case it.Qty <= 0:
			add("items[%d].qty: must be positive, got %d", i, it.Qty)
		case it.Qty > maxQty:
			add("items[%d].qty: at most %d, got %d", i, maxQty, it.Qty)
		}
		switch {
		case strings.TrimSpace(it.SKU) == "":
			add("items[%d].sku: required", i)
		case len(it.SKU) > maxText:
			add("items[%d].sku: at most %d bytes, got %d", i, maxText, len(it.SKU))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", errBadOrder, strings.Join(problems, "; "))
	}
	return nil
}

// checkText rejects what no text field of the API takes: invalid UTF-8 and
// control characters (NUL among them: Postgres text cannot hold it).
func checkText(field, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s: invalid UTF-8", errBadRequest, field)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %s: control character %U not allowed", errBadRequest, field, r)
		}
	}
	return nil
}

// jsonFrame is an object or array being walked by checkJSON.
type jsonFrame struct {
	obj     bool
	wantKey bool            // object: the next token is a key
	key     string          // object: the member being read
	keys    map[string]bool // object: the keys seen
	idx     int             // array: the element being read
}

// checkJSON walks body token by token: it must be one JSON object, each key
// once per object, every string (key or value) valid UTF-8 in the raw bytes,
// without lone surrogate escapes and without control characters. Errors
// name the field.
func checkJSON(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	var stack []*jsonFrame
	// path names the value being read; with last, a syntax error
	// between members names the member before it.
	path := func(last bool) string {
		var b strings.Builder
		for _, f := range stack {
			switch {
			case !f.obj:
				b.WriteString("[" + strconv.Itoa(f.idx) + "]")
			case !f.wantKey || last && f.key != "":
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f.key)
			}
		}
		if b.Len() == 0 {
			return "body"
		}
		return b.String()
	}
	valueDone := func() {
		if len(stack) == 0 {
			return
		}
		top := stack[len(stack)-1]
		if top.obj {
			top.wantKey = true
		} else {
			top.idx++
		}
	}
	started := false
	for {
		prev := dec.InputOffset()
		tok, err := dec.Token()
		if started && len(stack) == 0 {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("%w: malformed JSON: data after the order object", errBadRequest)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("%w: malformed JSON at %s (byte %d): %s", errBadRequest, path(true), dec.InputOffset(), strings.TrimPrefix(err.Error(), "json: "))
		}
		if !started {
			started = true
			if tok != json.Delim('{') {
				return fmt.Errorf("%w: malformed JSON: want a JSON object, got %s", errBadRequest, tokenKind(tok))
			}
		}
		raw := body[prev:dec.InputOffset()]
		var top *jsonFrame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, &jsonFrame{obj: true, wantKey: true, keys: map[string]bool{}})
			case '[':
				stack = append(stack, &jsonFrame{})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			if top != nil && top.obj && top.wantKey {
				where := "field name"
				if p := path(false); p != "body" {
					where = p + ": field name"
				}
				if err := checkRawString(where, raw, t); err != nil {
					return err
				}
				top.key, top.wantKey = t, false
				if top.keys[t] {
					return fmt.Errorf("%w: %s: repeated field", errBadRequest, path(false))
				}
				top.keys[t] = true
				continue
			}
			if err := checkRawString(path(false), raw, t); err != nil {
				return err
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

// checkRawString checks a string token: raw holds its bytes as sent (with
// whatever separators preceded it), s what encoding/json made of them.
func checkRawString(field string, raw []byte, s string) error {
	if i := bytes.IndexByte(raw, '"'); i >= 0 {
		raw = raw[i:]
	}
	if !utf8.Valid(raw) {
		return fmt.Errorf("%w: %s: invalid UTF-8", errBadRequest, field)
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' || i+1 >= len(raw) {
			continue
		}
		i++
		if raw[i] != 'u' {
			continue
		}
		r, ok := hex4(raw[i+1:])
		if !ok {
			continue // the decoder took it, so it is not there
		}
		i += 4
		switch {
		case r >= 0xD800 && r < 0xDC00:
			lo, ok := rune(0), false
			if i+2 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
				lo, ok = hex4(raw[i+3:])
			}
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return fmt.Errorf("%w: %s: invalid escape \\u%04X (a lone surrogate)", errBadRequest, field, r)
			}
			i += 6
		case r >= 0xDC00 && r <= 0xDFFF:
			return fmt.Errorf("%w: %s: invalid escape \\u%04X (a lone surrogate)", errBadRequest, field, r)
		}
	}
	return checkText(field, s)
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[:4]), 16, 32)
	return rune(n), err == nil
}

func tokenKind(tok json.Token) string {
	switch tok.(type) {
	case json.Delim:
		return "array"
	case string:
		return "string"
	case float64, json.Number:
		return "number"
	case bool:
		return "boolean"
	}
	return "null"
}
