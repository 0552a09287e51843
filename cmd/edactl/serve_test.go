package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// serve refuses to listen beyond loopback without a token.
func TestServeNeedsTokenOffLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0", "192.0.2.1:0"} {
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{"serve", "-transport", "postgres", "-db", "postgres://postgres@127.0.0.1:5432/test", "-addr", addr}, &out, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), "pass -token") {
			t.Errorf("-addr %s: exit %d, stderr %q", addr, code, errb.String())
		}
	}
	for _, host := range []string{"127.0.0.1", "::1", "localhost", "127.0.0.2"} {
		if !isLoopback(host) {
			t.Errorf("%s is loopback", host)
		}
	}
}

func TestRequireToken(t *testing.T) {
	h := requireToken("s3cret", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("in")) }))
	for _, c := range []struct {
		name   string
		req    func() *http.Request
		status int
	}{
		{"none", func() *http.Request { return httptest.NewRequest("GET", "/", nil) }, 401},
		{"wrong bearer", func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Authorization", "Bearer nope")
			return r
		}, 401},
		{"bearer", func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Authorization", "Bearer s3cret")
			return r
		}, 200},
		{"query sets the cookie", func() *http.Request { return httptest.NewRequest("GET", "/dlq?queue=q&token=s3cret", nil) }, 303},
		{"query on a POST", func() *http.Request { return httptest.NewRequest("POST", "/dlq?token=s3cret", nil) }, 401},
		{"cookie", func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.AddCookie(&http.Cookie{Name: tokenCookie, Value: "s3cret"})
			return r
		}, 200},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, c.req())
		if w.Code != c.status {
			t.Errorf("%s: %d, want %d", c.name, w.Code, c.status)
		}
	}
}
