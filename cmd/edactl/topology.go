package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// topologyFile is the JSON file topology and iam read.
type topologyFile struct {
	Topics   []topicSpec   `json:"topics"`
	Queues   []queueSpec   `json:"queues"`
	Services []serviceSpec `json:"services"`
}

type topicSpec struct {
	Name string `json:"name"`
	FIFO bool   `json:"fifo"`
}

type queueSpec struct {
	Name              string                     `json:"name"`
	Topics            []string                   `json:"topics"`
	FIFO              bool                       `json:"fifo"`
	VisibilityTimeout duration                   `json:"visibilityTimeout"`
	MaxReceiveCount   int                        `json:"maxReceiveCount"`
	DeadLetterQueue   string                     `json:"deadLetterQueue"`
	FilterPolicies    map[string]json.RawMessage `json:"filterPolicies"`
}

type serviceSpec struct {
	Name            string   `json:"name"`
	Publishes       []string `json:"publishes"`
	Consumes        []string `json:"consumes"`
	ReadDeadLetters bool     `json:"readDeadLetters"`
	// DelayedDelivery: the service publishes events with a delivery delay,
	// which the AWS transport sends to the subscribed queues itself.
	DelayedDelivery bool `json:"delayedDelivery"`
}

// duration is a Go duration string ("30s") or a number of seconds.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("duration: want a string like \"30s\" or a number of seconds, not %s", b)
	}
	*d = duration(secs * float64(time.Second))
	return nil
}

// loadTopology reads and checks a topology file; prefix goes before every
// topic and queue name.
func loadTopology(path, prefix string) (*topologyFile, error) {
	if path == "" {
		return nil, usagef("-f topology.json is required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("topology file: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f topologyFile
	if err := dec.Decode(&f); err != nil {
		return nil, usagef("topology file %s: %v", path, err)
	}
	if dec.More() {
		return nil, usagef("topology file %s: more than one JSON value", path)
	}
	if prefix != "" {
		f.addPrefix(prefix)
	}
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("%w: topology file %s: %w", errUsage, path, err)
	}
	return &f, nil
}

func (f *topologyFile) addPrefix(p string) {
	add := func(names []string) []string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = p + n
		}
		return out
	}
	for i := range f.Topics {
		f.Topics[i].Name = p + f.Topics[i].Name
	}
	for i := range f.Queues {
		q := &f.Queues[i]
		q.Name = p + q.Name
		q.Topics = add(q.Topics)
		if q.DeadLetterQueue != "" {
			q.DeadLetterQueue = p + q.DeadLetterQueue
		}
		if q.FilterPolicies != nil {
			fp := make(map[string]json.RawMessage, len(q.FilterPolicies))
			for k, v := range q.FilterPolicies {
				fp[p+k] = v
			}
			q.FilterPolicies = fp
		}
	}
	for i := range f.Services {
		s := &f.Services[i]
		s.Publishes, s.Consumes = add(s.Publishes), add(s.Consumes)
	}
}

// validate checks what the file says about itself; the AWS rules (names,
// limits) are checked by Topology.Validate.
func (f *topologyFile) validate() error {
	var errs []error
	if len(f.Topics) == 0 && len(f.Queues) == 0 {
		errs = append(errs, errors.New("declares no topics and no queues"))
	}
	queues := map[string]bool{}
	for _, q := range f.Queues {
		if queues[q.Name] {
			errs = append(errs, fmt.Errorf("queue %q declared twice", q.Name))
		}
		queues[q.Name] = true
		if q.VisibilityTimeout < 0 {
			errs = append(errs, fmt.Errorf("queue %q: negative visibilityTimeout", q.Name))
		}
	}
	topics := map[string]bool{}
	for _, t := range f.Topics {
		topics[t.Name] = true
	}
	for _, q := range f.Queues {
		for _, t := range q.Topics {
			topics[t] = true
		}
	}
	services := map[string]bool{}
	for _, s := range f.Services {
		if s.Name == "" {
			errs = append(errs, errors.New("a service has no name"))
		}
		if services[s.Name] {
			errs = append(errs, fmt.Errorf("service %q declared twice", s.Name))
		}
		services[s.Name] = true
		for _, t := range s.Publishes {
			if !topics[t] {
				errs = append(errs, fmt.Errorf("service %q publishes to %q, which is not a declared topic", s.Name, t))
			}
		}
		for _, q := range s.Consumes {
			if !queues[q] {
				errs = append(errs, fmt.Errorf("service %q consumes %q, which is not a declared queue", s.Name, q))
			}
		}
	}
	if _, err := f.topology(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// topology converts the file to the AWS transport's Topology.
func (f *topologyFile) topology() (edaaws.Topology, error) {
	var tp edaaws.Topology
	var errs []error
	for _, t := range f.Topics {
		tp.Topics = append(tp.Topics, edaaws.Topic{Name: t.Name, FIFO: t.FIFO})
	}
	for _, q := range f.Queues {
		aq := edaaws.Queue{Queue: q.queue()}
		for topic, raw := range q.FilterPolicies {
			policy, err := filterPolicy(raw)
			if err != nil {
				errs = append(errs, fmt.Errorf("queue %q: filter policy for %q: %w", q.Name, topic, err))
				continue
			}
			if aq.FilterPolicies == nil {
				aq.FilterPolicies = map[string]string{}
			}
			aq.FilterPolicies[topic] = policy
		}
		tp.Queues = append(tp.Queues, aq)
	}
	return tp, errors.Join(append(errs, tp.Validate())...)
}

func (q queueSpec) queue() transport.Queue {
	return transport.Queue{
		Name: q.Name, Topics: q.Topics, FIFO: q.FIFO, VisibilityTimeout: time.Duration(q.VisibilityTimeout),
		MaxReceiveCount: q.MaxReceiveCount, DeadLetterQueue: q.DeadLetterQueue,
	}.WithDefaults()
}

// filterPolicy accepts a policy as a JSON object or as a string holding one.
func filterPolicy(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		raw = json.RawMessage(s)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", fmt.Errorf("want a JSON object: %w", err)
	}
	b, err := json.Marshal(obj)
	return string(b), err
}

func runTopology(ctx context.Context, c *cli, args []string) error {
	sub, args, err := subcommand(args, "plan", "apply")
	if err != nil {
		return err
	}
	fs := c.flagSet("topology "+sub, "-f topology.json [flags]")
	file := fs.String("f", "", "topology file (JSON); required")
	prefix := fs.String("prefix", "", "prefix of every topic and queue name")
	var af awsFlags
	af.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	f, err := loadTopology(*file, *prefix)
	if err != nil {
		return err
	}
	topo, _ := f.topology()
	tr, err := af.transport(ctx, false)
	if err != nil {
		return err
	}
	defer tr.Close()
	var plan edaaws.Plan
	if sub == "plan" {
		plan, err = tr.Plan(ctx, topo)
	} else {
		plan, err = tr.Apply(ctx, topo)
	}
	// Apply returns what it did before an error: show it.
	type change struct {
		Action   string `json:"action"`
		Resource string `json:"resource"`
		Detail   string `json:"detail,omitempty"`
	}
	changes := make([]change, 0, len(plan.Changes))
	rows := make([][]string, 0, len(plan.Changes))
	for _, ch := range plan.Changes {
		changes = append(changes, change{string(ch.Action), ch.Resource, ch.Detail})
		rows = append(rows, []string{string(ch.Action), ch.Resource, ch.Detail})
	}
	if err != nil && len(changes) == 0 {
		return err
	}
	if c.json {
		out := struct {
			Applied bool     `json:"applied"`
			Changes []change `json:"changes"`
		}{sub == "apply" && err == nil, changes}
		if perr := c.printJSON(out); perr != nil {
			return perr
		}
	} else {
		switch {
		case len(rows) == 0:
			fmt.Fprintln(c.stdout, "no changes: AWS matches the topology")
		default:
			c.table([]string{"ACTION", "RESOURCE", "DETAIL"}, rows)
			if sub == "plan" {
				fmt.Fprintf(c.stdout, "%d change(s); edactl topology apply makes them\n", len(rows))
			} else if err == nil {
				fmt.Fprintf(c.stdout, "applied %d change(s)\n", len(rows))
			}
		}
	}
	return err
}

// callerAccount asks STS for the account of the credentials.
func callerAccount(ctx context.Context, af awsFlags) (string, error) {
	cfg, err := af.config(ctx)
	if err != nil {
		return "", err
	}
	client := sts.NewFromConfig(cfg, func(o *sts.Options) {
		if af.endpoint != "" {
			o.BaseEndpoint = awssdk.String(af.endpoint)
		}
	})
	out, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", err
	}
	return awssdk.ToString(out.Account), nil
}
