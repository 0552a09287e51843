package aws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/edaproject/eda/transport"
)

// Topology is topics and queues as code: Plan tells what differs on AWS,
// Apply makes it so. Both are idempotent; Apply on an up-to-date topology
// changes nothing.
type Topology struct {
	// Topics to create. Topics named by Queues are added (FIFO when their
	// queue is).
	Topics []Topic
	// Queues to create, each with its dead-letter queue, the subscriptions
	// to its topics (raw message delivery) and a queue policy that lets only
	// those topics send to it (aws:SourceArn).
	Queues []Queue
	// With Config.ClaimCheck.Bucket, Plan and Apply also cover the bucket:
	// created when missing, with a lifecycle rule expiring the blobs.
}

// Topic is an SNS topic. A FIFO topic's SNS name has the ".fifo" suffix;
// publish to it by its name with or without it.
type Topic struct {
	Name string
	FIFO bool
}

// Queue is an SQS queue with its subscriptions.
type Queue struct {
	transport.Queue
	// FilterPolicies maps some of Queue.Topics to the SNS filter policy
	// (JSON, on message attributes) of the queue's subscription to it: only
	// matching messages reach the queue. The eda envelope (ce_type,
	// ce_source, ...) is in the message attributes.
	FilterPolicies map[string]string
}

// Action is the kind of a Change.
type Action string

// Actions of a Plan.
const (
	ActionCreateTopic        Action = "create-topic"
	ActionCreateQueue        Action = "create-queue"
	ActionUpdateQueue        Action = "update-queue"
	ActionSubscribe          Action = "subscribe"
	ActionUpdateSubscription Action = "update-subscription"
)

// Change is one step of a Plan.
type Change struct {
	Action   Action
	Resource string // the topic or queue (SNS/SQS name), or "topic -> queue"
	Detail   string // what is set
	apply    func(context.Context) error
}

func (c Change) String() string {
	if c.Detail == "" {
		return string(c.Action) + " " + c.Resource
	}
	return string(c.Action) + " " + c.Resource + ": " + c.Detail
}

// Plan is what Apply would change, in order.
type Plan struct {
	Changes []Change
}

// String lists the changes, one a line, or says there are none.
func (p Plan) String() string {
	if len(p.Changes) == 0 {
		return "no changes"
	}
	lines := make([]string, len(p.Changes))
	for i, c := range p.Changes {
		lines[i] = c.String()
	}
	return strings.Join(lines, "\n")
}

// Validate reports every problem with the topology, joined.
func (tp Topology) Validate() error {
	_, err := tp.topics()
	errs := []error{err}
	for _, t := range tp.Topics {
		errs = append(errs, validName("topic", physical(t.Name, t.FIFO), 256))
	}
	for _, q := range tp.Queues {
		errs = append(errs, validateQueue(q))
	}
	return errors.Join(errs...)
}

func validateQueue(q Queue) error {
	if err := q.Queue.Validate(); err != nil {
		return err
	}
	q.Queue = q.WithDefaults()
	errs := []error{validName("queue", physical(q.Name, q.FIFO), 80)}
	if q.DeadLetterQueue != "" {
		errs = append(errs, validName("queue", physical(q.DeadLetterQueue, q.FIFO), 80))
	}
	for _, t := range q.Topics {
		errs = append(errs, validName("topic", physical(t, q.FIFO), 256))
	}
	if vt := q.VisibilityTimeout; vt%time.Second != 0 || vt > 12*time.Hour {
		errs = append(errs, fmt.Errorf("%w: aws: queue %q: visibility timeout %s: SQS takes whole seconds up to 12h", transport.ErrInvalidConfig, q.Name, vt))
	}
	if q.MaxReceiveCount > 1000 {
		errs = append(errs, fmt.Errorf("%w: aws: queue %q: MaxReceiveCount %d over the SQS maximum 1000", transport.ErrInvalidConfig, q.Name, q.MaxReceiveCount))
	}
	for topic, policy := range q.FilterPolicies {
		if !slices.Contains(q.Topics, topic) {
			errs = append(errs, fmt.Errorf("%w: aws: queue %q: filter policy for %q, which is not one of its topics", transport.ErrInvalidConfig, q.Name, topic))
		}
		if !json.Valid([]byte(policy)) {
			errs = append(errs, fmt.Errorf("%w: aws: queue %q: filter policy for %q is not JSON", transport.ErrInvalidConfig, q.Name, topic))
		}
	}
	return errors.Join(errs...)
}

// checkFilterKeys refuses filter policies on metadata this transport does
// not send as message attributes (Config.Attributes): SNS would match
// nothing and drop every message for the subscription without a word.
func (t *Transport) checkFilterKeys(topo Topology) error {
	if slices.Contains(t.cfg.Attributes, allAttributes) {
		return nil
	}
	var errs []error
	for _, q := range topo.Queues {
		for topic, policy := range q.FilterPolicies {
			var v any
			if err := json.Unmarshal([]byte(policy), &v); err != nil {
				continue // Validate reported it
			}
			for _, k := range policyKeys(v) {
				if !slices.Contains(t.cfg.Attributes, k) {
					errs = append(errs, fmt.Errorf("%w: aws: queue %q: filter policy for %q matches on %q, which this transport does not send as a message attribute (add it to Config.Attributes)", transport.ErrInvalidConfig, q.Name, topic, k))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// policyKeys returns the attribute names a filter policy matches on: the
// keys of its object, and of the objects under "$or".
func policyKeys(v any) []string {
	var keys []string
	switch v := v.(type) {
	case map[string]any:
		for k, sub := range v {
			if k == "$or" {
				keys = append(keys, policyKeys(sub)...)
				continue
			}
			keys = append(keys, k)
		}
	case []any:
		for _, sub := range v {
			keys = append(keys, policyKeys(sub)...)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

func validName(kind, name string, maxLen int) error {
	base := strings.TrimSuffix(name, fifoSuffix)
	ok := base != "" && len(name) <= maxLen
	for _, r := range base {
		ok = ok && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}
	if !ok {
		return fmt.Errorf("%w: aws: %s name %q: want letters, digits, '-' and '_', at most %d characters with .fifo", transport.ErrInvalidConfig, kind, name, maxLen)
	}
	return nil
}

// topics returns every topic of the topology, FIFO or not, in order.
func (tp Topology) topics() ([]Topic, error) {
	var out []Topic
	fifo := map[string]bool{}
	var errs []error
	add := func(t Topic) {
		if f, ok := fifo[t.Name]; ok {
			if f != t.FIFO {
				errs = append(errs, fmt.Errorf("%w: aws: topic %q is declared both FIFO and standard", transport.ErrInvalidConfig, t.Name))
			}
			return
		}
		fifo[t.Name] = t.FIFO
		out = append(out, t)
	}
	for _, t := range tp.Topics {
		add(t)
	}
	for _, q := range tp.Queues {
		for _, t := range q.Topics {
			add(Topic{Name: t, FIFO: q.FIFO})
		}
	}
	return out, errors.Join(errs...)
}

// Declare creates or verifies q: with Config.AutoCreate it applies the
// topology of q (topics, queue, dead-letter queue, subscriptions, queue
// policy); without, it only checks and reports what is missing
// (transport.ErrUnknownTopic, transport.ErrUnknownQueue) or different
// (transport.ErrInvalidConfig). Declaring a queue again with more topics adds
// them.
func (t *Transport) Declare(ctx context.Context, q transport.Queue) error {
	if err := t.begin(); err != nil {
		return err
	}
	defer t.wg.Done()
	topo := Topology{Queues: []Queue{{Queue: q}}}
	if t.cfg.AutoCreate {
		_, err := t.apply(ctx, topo)
		return err
	}
	st, plan, err := t.plan(ctx, topo)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range plan.Changes {
		switch c.Action {
		case ActionCreateTopic:
			errs = append(errs, fmt.Errorf("%w: aws: %s does not exist (AutoCreate is off)", transport.ErrUnknownTopic, c.Resource))
		case ActionCreateQueue:
			errs = append(errs, fmt.Errorf("%w: aws: %s does not exist (AutoCreate is off)", transport.ErrUnknownQueue, c.Resource))
		default:
			errs = append(errs, fmt.Errorf("%w: aws: differs from the declaration (AutoCreate is off): %s", transport.ErrInvalidConfig, c))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	t.remember(topo, st)
	return nil
}

// Plan returns what Apply would change to make AWS match the topology.
func (t *Transport) Plan(ctx context.Context, topo Topology) (Plan, error) {
	if err := t.begin(); err != nil {
		return Plan{}, err
	}
	defer t.wg.Done()
	_, plan, err := t.plan(ctx, topo)
	if err != nil {
		return Plan{}, err
	}
	cc, err := t.planClaimCheck(ctx)
	plan.Changes = append(plan.Changes, cc...)
	return plan, err
}

// Apply makes AWS match the topology and returns what it changed. It only
// creates and updates; it deletes nothing.
func (t *Transport) Apply(ctx context.Context, topo Topology) (Plan, error) {
	if err := t.begin(); err != nil {
		return Plan{}, err
	}
	defer t.wg.Done()
	return t.apply(ctx, topo)
}

func (t *Transport) apply(ctx context.Context, topo Topology) (Plan, error) {
	st, plan, err := t.plan(ctx, topo)
	if err != nil {
		return Plan{}, err
	}
	cc, err := t.planClaimCheck(ctx)
	if err != nil {
		return Plan{}, err
	}
	plan.Changes = append(plan.Changes, cc...)
	for i, c := range plan.Changes {
		if err := c.apply(ctx); err != nil {
			return Plan{Changes: plan.Changes[:i]}, fmt.Errorf("aws: apply %s: %w", c, err)
		}
	}
	t.remember(topo, st)
	return plan, nil
}

// planState is what planning learned, completed by applying.
type planState struct {
	topics map[string]topicInfo // topic name → ARN
	urls   map[string]string    // SQS name → URL
}

// remember caches what the topology declared, for Publish and Subscribe.
func (t *Transport) remember(topo Topology, st *planState) {
	topics, _ := topo.topics()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tp := range topics {
		if info, ok := st.topics[tp.Name]; ok {
			t.topics[tp.Name] = info
			delete(t.subscribers, info.arn) // its subscriptions may have changed
		}
	}
	for _, q := range topo.Queues {
		d := q.WithDefaults()
		if url := st.urls[physical(d.Name, d.FIFO)]; url != "" {
			t.queues[d.Name] = queueInfo{name: d.Name, url: url, fifo: d.FIFO, visibility: d.VisibilityTimeout}
		}
		if d.DeadLetterQueue != "" {
			if url := st.urls[physical(d.DeadLetterQueue, d.FIFO)]; url != "" {
				if _, ok := t.queues[d.DeadLetterQueue]; !ok {
					t.queues[d.DeadLetterQueue] = queueInfo{name: d.DeadLetterQueue, url: url, fifo: d.FIFO, visibility: transport.DefaultVisibilityTimeout}
				}
			}
			t.dlqOf[d.DeadLetterQueue] = d.Name
		}
	}
}

func (t *Transport) plan(ctx context.Context, topo Topology) (*planState, Plan, error) {
	if err := topo.Validate(); err != nil {
		return nil, Plan{}, err
	}
	if err := t.checkFilterKeys(topo); err != nil {
		return nil, Plan{}, err
	}
	topics, _ := topo.topics()
	st := &planState{topics: map[string]topicInfo{}, urls: map[string]string{}}
	var plan Plan
	exists := map[string]bool{}
	for _, tp := range topics {
		name := physical(tp.Name, tp.FIFO)
		arn, err := t.arn(ctx, "sns", name)
		if err != nil {
			return nil, Plan{}, err
		}
		st.topics[tp.Name] = topicInfo{arn: arn, fifo: tp.FIFO}
		attrs, err := t.topicAttributes(ctx, arn)
		if err != nil {
			return nil, Plan{}, err
		}
		if attrs != nil {
			exists[tp.Name] = true
			if (attrs["FifoTopic"] == "true") != tp.FIFO {
				return nil, Plan{}, fmt.Errorf("%w: aws: topic %s exists with FifoTopic=%q", transport.ErrInvalidConfig, name, attrs["FifoTopic"])
			}
			continue
		}
		plan.Changes = append(plan.Changes, Change{
			Action: ActionCreateTopic, Resource: name, Detail: fmt.Sprintf("fifo=%t", tp.FIFO),
			apply: func(ctx context.Context) error {
				got, err := t.createTopic(ctx, tp.Name, tp.FIFO)
				if err == nil && got != arn {
					err = fmt.Errorf("created topic has ARN %s, expected %s (check Region, AccountID, Partition)", got, arn)
				}
				return err
			},
		})
	}

	planned := map[string]bool{} // SQS names already planned
	for _, q := range topo.Queues {
		d := q.WithDefaults()
		if d.DeadLetterQueue != "" {
			explicit := slices.ContainsFunc(topo.Queues, func(o Queue) bool { return o.Name == d.DeadLetterQueue })
			dlqName := physical(d.DeadLetterQueue, d.FIFO)
			if !explicit && !planned[dlqName] {
				planned[dlqName] = true
				changes, err := t.planQueue(ctx, st, Queue{Queue: transport.Queue{Name: d.DeadLetterQueue, FIFO: d.FIFO}.WithDefaults()}, true)
				if err != nil {
					return nil, Plan{}, err
				}
				plan.Changes = append(plan.Changes, changes...)
			}
		}
		name := physical(d.Name, d.FIFO)
		if planned[name] {
			return nil, Plan{}, fmt.Errorf("%w: aws: queue %s declared twice in one topology", transport.ErrInvalidConfig, name)
		}
		planned[name] = true
		changes, err := t.planQueue(ctx, st, Queue{Queue: d, FilterPolicies: q.FilterPolicies}, false)
		if err != nil {
			return nil, Plan{}, err
		}
		plan.Changes = append(plan.Changes, changes...)
		subs, err := t.planSubscriptions(ctx, st, exists, Queue{Queue: d, FilterPolicies: q.FilterPolicies})
		if err != nil {
			return nil, Plan{}, err
		}
		plan.Changes = append(plan.Changes, subs...)
	}
	return st, plan, nil
}

// planQueue plans one queue. A dead-letter queue declared implicitly only
// has to exist: its attributes are left alone.
func (t *Transport) planQueue(ctx context.Context, st *planState, q Queue, implicitDLQ bool) ([]Change, error) {
	name := physical(q.Name, q.FIFO)
	queueARN, err := t.arn(ctx, "sqs", name)
	if err != nil {
		return nil, err
	}
	want := map[string]string{"VisibilityTimeout": strconv.Itoa(int(q.VisibilityTimeout / time.Second))}
	if q.DeadLetterQueue != "" {
		dlqARN, err := t.arn(ctx, "sqs", physical(q.DeadLetterQueue, q.FIFO))
		if err != nil {
			return nil, err
		}
		want["RedrivePolicy"] = fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":%d}`, dlqARN, q.MaxReceiveCount)
	}
	var topicARNs []string
	for _, tp := range q.Topics {
		topicARNs = append(topicARNs, st.topics[tp].arn)
	}

	url, err := t.queueURL(ctx, name)
	if err != nil {
		return nil, err
	}
	if url == "" {
		if len(topicARNs) > 0 {
			if want["Policy"], err = queuePolicy(queueARN, topicARNs, ""); err != nil {
				return nil, err
			}
		}
		attrs := maps.Clone(want)
		if q.FIFO {
			attrs["FifoQueue"] = "true"
		}
		return []Change{{
			Action: ActionCreateQueue, Resource: name, Detail: describe(attrs),
			apply: func(ctx context.Context) error {
				out, err := t.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &name, Attributes: attrs})
				if err != nil {
					return classify(err)
				}
				st.urls[name] = awssdk.ToString(out.QueueUrl)
				return nil
			},
		}}, nil
	}
	st.urls[name] = url
	have, err := t.queueAttributes(ctx, url)
	if err != nil {
		return nil, err
	}
	if (have["FifoQueue"] == "true") != q.FIFO {
		return nil, fmt.Errorf("%w: aws: queue %s exists with FifoQueue=%q", transport.ErrInvalidConfig, name, have["FifoQueue"])
	}
	if implicitDLQ {
		return nil, nil
	}
	set := map[string]string{}
	if have["VisibilityTimeout"] != want["VisibilityTimeout"] {
		set["VisibilityTimeout"] = want["VisibilityTimeout"]
	}
	if !sameJSON(have["RedrivePolicy"], want["RedrivePolicy"]) {
		set["RedrivePolicy"] = want["RedrivePolicy"]
	}
	if len(topicARNs) > 0 {
		// Declaring again with more topics adds them: keep the topics the
		// policy already allows.
		allowed := append(policySourceARNs(have["Policy"]), topicARNs...)
		slices.Sort(allowed)
		allowed = slices.Compact(allowed)
		policy, err := queuePolicy(queueARN, allowed, have["Policy"])
		if err != nil {
			return nil, err
		}
		if !sameJSON(have["Policy"], policy) {
			set["Policy"] = policy
		}
	}
	if len(set) == 0 {
		return nil, nil
	}
	return []Change{{
		Action: ActionUpdateQueue, Resource: name, Detail: describe(set),
		apply: func(ctx context.Context) error {
			_, err := t.sqs.SetQueueAttributes(ctx, &sqs.SetQueueAttributesInput{QueueUrl: &url, Attributes: set})
			return classify(err)
		},
	}}, nil
}

// planSubscriptions plans the subscriptions of q to its topics: raw message
// delivery and the filter policy.
func (t *Transport) planSubscriptions(ctx context.Context, st *planState, exists map[string]bool, q Queue) ([]Change, error) {
	name := physical(q.Name, q.FIFO)
	queueARN, err := t.arn(ctx, "sqs", name)
	if err != nil {
		return nil, err
	}
	var changes []Change
	for _, tp := range q.Topics {
		topicARN := st.topics[tp].arn
		want := map[string]string{"RawMessageDelivery": "true"}
		if fp := q.FilterPolicies[tp]; fp != "" {
			want["FilterPolicy"] = fp
			want["FilterPolicyScope"] = "MessageAttributes"
		}
		resource := physical(tp, q.FIFO) + " -> " + name
		subARN := ""
		if exists[tp] {
			if subARN, err = t.findSubscription(ctx, topicARN, queueARN); err != nil {
				return nil, err
			}
		}
		if subARN == "" {
			changes = append(changes, Change{
				Action: ActionSubscribe, Resource: resource, Detail: describe(want),
				apply: func(ctx context.Context) error {
					_, err := t.sns.Subscribe(ctx, &sns.SubscribeInput{
						TopicArn: &topicARN, Protocol: awssdk.String("sqs"), Endpoint: &queueARN,
						Attributes: want, ReturnSubscriptionArn: true,
					})
					return classify(err)
				},
			})
			continue
		}
		out, err := t.sns.GetSubscriptionAttributes(ctx, &sns.GetSubscriptionAttributesInput{SubscriptionArn: &subARN})
		if err != nil {
			return nil, classify(fmt.Errorf("aws: get attributes of subscription %s: %w", subARN, err))
		}
		have := out.Attributes
		set := map[string]string{}
		if have["RawMessageDelivery"] != "true" {
			set["RawMessageDelivery"] = "true"
		}
		if !sameJSON(have["FilterPolicy"], want["FilterPolicy"]) {
			set["FilterPolicy"] = want["FilterPolicy"] // "" removes it
		}
		for _, k := range slices.Sorted(maps.Keys(set)) {
			v := set[k]
			changes = append(changes, Change{
				Action: ActionUpdateSubscription, Resource: resource, Detail: describe(map[string]string{k: v}),
				apply: func(ctx context.Context) error {
					_, err := t.sns.SetSubscriptionAttributes(ctx, &sns.SetSubscriptionAttributesInput{
						SubscriptionArn: &subARN, AttributeName: awssdk.String(k), AttributeValue: awssdk.String(v),
					})
					return classify(err)
				},
			})
		}
	}
	return changes, nil
}

// findSubscription returns the ARN of the SQS subscription of queueARN to
// topicARN, "" if there is none.
func (t *Transport) findSubscription(ctx context.Context, topicARN, queueARN string) (string, error) {
	p := sns.NewListSubscriptionsByTopicPaginator(t.sns, &sns.ListSubscriptionsByTopicInput{TopicArn: &topicARN})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return "", classify(fmt.Errorf("aws: list subscriptions of %s: %w", topicARN, err))
		}
		for _, s := range page.Subscriptions {
			if awssdk.ToString(s.Protocol) == "sqs" && awssdk.ToString(s.Endpoint) == queueARN {
				return awssdk.ToString(s.SubscriptionArn), nil
			}
		}
	}
	return "", nil
}

// sameJSON compares two JSON documents by value; "" equals "" only.
// Numbers written as strings ("2") equal numbers (2), as SQS returns
// maxReceiveCount either way.
func sameJSON(a, b string) bool {
	if a == "" || b == "" {
		return a == b
	}
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return a == b
	}
	return reflect.DeepEqual(normalize(va), normalize(vb))
}

func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return v
}

func describe(attrs map[string]string) string {
	parts := make([]string, 0, len(attrs))
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		parts = append(parts, k+"="+attrs[k])
	}
	return strings.Join(parts, " ")
}
