package main

import (
	"strings"
	"testing"
)

func TestHelpListsCommands(t *testing.T) {
	t.Parallel()
	help, _, code := edactl(t, "help")
	if code != exitOK {
		t.Fatalf("help: exit %d", code)
	}
	for _, c := range []string{"topology", "iam", "outbox", "dlq", "tail", "-o json"} {
		if !strings.Contains(help, c) {
			t.Errorf("help does not mention %q:\n%s", c, help)
		}
	}
	out, _, code := edactl(t, "help", "dlq")
	if code != exitOK {
		t.Fatalf("help dlq: exit %d", code)
	}
	for _, sub := range []string{"dlq list", "dlq show", "dlq redrive"} {
		if !strings.Contains(out, sub) {
			t.Errorf("help dlq does not show %q:\n%s", sub, out)
		}
	}
	_, errs, code := edactl(t, "dlq", "show", "-h")
	if code != exitOK || !strings.Contains(errs, "-queue") || !strings.Contains(errs, "-visibility") {
		t.Errorf("dlq show -h: exit %d, flags:\n%s", code, errs)
	}
}

// Bad command lines exit with status 2 and say what is wrong.
func TestBadInput(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		want string
	}{
		{nil, "Usage"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"topology"}, "missing subcommand"},
		{[]string{"topology", "destroy"}, `unknown subcommand "destroy"`},
		{[]string{"topology", "plan"}, "-f topology.json is required"},
		{[]string{"topology", "plan", "-f", "testdata/missing.json"}, "no such file"},
		{[]string{"topology", "plan", "-f", "testdata/bad-unknown-field.json"}, `unknown field "maxReceive"`},
		{[]string{"topology", "plan", "-f", "testdata/bad-references.json"}, `consumes "nowhere", which is not a declared queue`},
		{[]string{"topology", "plan", "-f", "testdata/bad-references.json"}, `filter policy for "orders": want a JSON object`},
		{[]string{"topology", "plan", "-f", "testdata/bad-references.json"}, "visibility timeout 1.5s"},
		{[]string{"topology", "plan", "-f", "testdata/orders-topology.json", "-o", "yaml"}, "want table or json"},
		{[]string{"iam", "-f", "testdata/orders-topology.json", "-account", "1", "-region", "eu-west-1", "-service", "billing"}, `no service "billing"`},
		{[]string{"outbox", "status"}, "-db is required"},
		{[]string{"outbox", "status", "-db", "/nonexistent/app.db"}, "not a SQLite file"},
		{[]string{"outbox", "retry", "-db", "x.db"}, "(seq...) or pass -all"},
		{[]string{"outbox", "retry", "-db", "x.db", "abc"}, `"abc" is not a record sequence number`},
		{[]string{"dlq", "show", "-transport", "postgres"}, "-queue is required"},
		{[]string{"dlq", "list"}, "-transport is required"},
		{[]string{"dlq", "list", "-transport", "kafka"}, `-transport "kafka"`},
		{[]string{"dlq", "list", "-transport", "postgres", "-db", "mysql://x"}, "not a postgres:// URL"},
		{[]string{"dlq", "redrive", "-transport", "postgres", "-queue", "q", "-since", "yesterday"}, "want an RFC 3339 time"},
		{[]string{"dlq", "redrive", "-transport", "postgres", "-queue", "q", "-until", "-5m"}, "want an RFC 3339 time"},
		{[]string{"dlq", "redrive", "-transport", "postgres", "-queue", "q", "-since", "1h", "-until", "2h"}, "is after -until"},
		{[]string{"dlq", "redrive", "-transport", "postgres", "-queue", "q", "-reason", "bored"}, "want one of permanent, retries_exhausted, max_receive_count"},
		{[]string{"dlq", "redrive", "-transport", "postgres", "-queue", "q", "-n", "-3"}, "want a positive count"},
		{[]string{"dlq", "redrive", "-transport", "postgres", "-queue", "q", "-dry-run=maybe"}, "invalid boolean"},
		{[]string{"dlq", "show", "-transport", "postgres", "-queue", "q", "-type", "orders.OrderCreated"}, "only dlq redrive takes -type"},
		{[]string{"dlq", "redrive", "-transport", "postgres"}, "-queue is required"},
		{[]string{"tail", "-transport", "aws"}, "-queue or -topic is required"},
		{[]string{"tail", "-queue", "q", "-n", "-1", "-transport", "aws"}, "must not be negative"},
	}
	for _, c := range cases {
		out, errs, code := edactl(t, c.args...)
		if code != exitUsage {
			t.Errorf("edactl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), code, exitUsage, out, errs)
			continue
		}
		if !strings.Contains(errs, c.want) {
			t.Errorf("edactl %s: stderr does not say %q:\n%s", strings.Join(c.args, " "), c.want, errs)
		}
	}
}

// Unreachable servers exit with status 1 and name the server.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	_, errs, code := edactl(t, "outbox", "status", "-db", "postgres://postgres@127.0.0.1:1/test?connect_timeout=2")
	if code != exitError || !strings.Contains(errs, "not reachable") {
		t.Errorf("outbox status on a closed port: exit %d, stderr %q", code, errs)
	}
	_, errs, code = edactl(t, "dlq", "list", "-transport", "postgres", "-db", "postgres://postgres@127.0.0.1:1/test?connect_timeout=2")
	if code != exitError || !strings.Contains(errs, "not reachable") {
		t.Errorf("dlq list on a closed port: exit %d, stderr %q", code, errs)
	}
	for _, args := range [][]string{
		{"dlq", "list", "-transport", "aws"},
		{"tail", "-transport", "aws", "-queue", "q"},
		{"topology", "plan", "-f", "testdata/orders-topology.json"},
	} {
		_, errs, code = edactl(t, append(args, "-aws-endpoint", "http://127.0.0.1:1")...)
		if code != exitError || !strings.Contains(errs, "SNS/SQS is not reachable") {
			t.Errorf("%v on a closed port: exit %d, stderr %q", args, code, errs)
		}
	}
}
