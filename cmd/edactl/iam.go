package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// Roles iam writes policies for.
const (
	roleServices = "services" // each service of the file: edaaws.ServicePolicy
	roleDeploy   = "deploy"   // what edactl topology apply needs
	roleOperator = "operator" // what edactl dlq and tail need
	roleRelay    = "relay"    // an outbox relay draining the services' shared outbox
)

// tailQueuePrefix starts the name of every queue edactl tail creates.
const tailQueuePrefix = "edactl-tail-"

type namedPolicy struct {
	Name   string                `json:"name"`
	Policy edaaws.PolicyDocument `json:"policy"`
}

func runIAM(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("iam", "-f topology.json [-role services|deploy|operator] [-service name] [flags]")
	file := fs.String("f", "", "topology file (JSON); required")
	prefix := fs.String("prefix", "", "prefix of every topic and queue name")
	role := fs.String("role", roleServices, "services: each service's policy (the file's services section); deploy: what topology apply needs; operator: what dlq and tail need; relay: an outbox relay publishing for every service of the file (one outbox shared by the services)")
	service := fs.String("service", "", "services: print only this service's policy")
	var af awsFlags
	af.register(fs)
	partition := fs.String("partition", edaaws.DefaultPartition, "AWS partition of the ARNs")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	switch *role {
	case roleServices:
	case roleDeploy, roleOperator, roleRelay:
		if *service != "" {
			return usagef("-service goes with -role services")
		}
	default:
		return usagef("-role %q: want services, deploy, operator or relay", *role)
	}
	f, err := loadTopology(*file, *prefix)
	if err != nil {
		return err
	}
	services := f.Services
	if *role == roleServices || *role == roleRelay {
		if len(services) == 0 {
			return usagef("topology file %s has no services section: nothing to write policies for (see -role)", *file)
		}
		if *service != "" {
			i := slices.IndexFunc(services, func(s serviceSpec) bool { return s.Name == *service })
			if i < 0 {
				var names []string
				for _, s := range services {
					names = append(names, s.Name)
				}
				return usagef("no service %q in %s (it has %s)", *service, *file, strings.Join(names, ", "))
			}
			services = services[i : i+1]
		}
	}
	region, account := af.region, af.account
	if region == "" { // the AWS chain's
		cfg, err := af.config(ctx)
		if err != nil {
			return err
		}
		region = cfg.Region
	}
	if account == "" {
		if account, err = callerAccount(ctx, af); err != nil {
			return fmt.Errorf("find the account id (or pass -account): %w", err)
		}
	}
	arns := arnBuilder{partition: *partition, region: region, account: account}

	var out []namedPolicy
	switch *role {
	case roleServices:
		fifo := f.topicFIFO()
		queues := map[string]queueSpec{}
		for _, q := range f.Queues {
			queues[q.Name] = q
		}
		for _, s := range services {
			access := edaaws.ServiceAccess{Region: region, AccountID: account, Partition: *partition, ReadDeadLetters: s.ReadDeadLetters, ClaimCheck: af.claimCheck()}
			for _, t := range s.Publishes {
				access.Publishes = append(access.Publishes, edaaws.Topic{Name: t, FIFO: fifo[t]})
			}
			if s.DelayedDelivery {
				access.DelayedDelivery = f.subscribers(s.Publishes)
			}
			for _, q := range s.Consumes {
				access.Consumes = append(access.Consumes, queues[q].queue())
			}
			doc, err := edaaws.ServicePolicy(access)
			if err != nil {
				return fmt.Errorf("%w: service %q: %w", errUsage, s.Name, err)
			}
			out = append(out, namedPolicy{s.Name, doc})
		}
	case roleRelay:
		fifo := f.topicFIFO()
		access := edaaws.ServiceAccess{Region: region, AccountID: account, Partition: *partition}
		var delayed []string
		for _, s := range services {
			for _, t := range s.Publishes {
				access.Publishes = append(access.Publishes, edaaws.Topic{Name: t, FIFO: fifo[t]})
			}
			if s.DelayedDelivery { // the relay publishes the service's delayed records
				delayed = append(delayed, s.Publishes...)
			}
		}
		access.DelayedDelivery = f.subscribers(delayed)
		doc, err := edaaws.ServicePolicy(access)
		if err != nil {
			return fmt.Errorf("%w: relay: %w", errUsage, err)
		}
		out = append(out, namedPolicy{"relay", doc})
	case roleDeploy:
		doc := deployPolicy(f, arns)
		if cc := af.claimCheck(); cc.Bucket != "" {
			doc.Statement = append(doc.Statement, edaaws.ClaimCheckDeployStatement(*partition, cc))
		}
		out = append(out, namedPolicy{"deploy", doc})
	case roleOperator:
		out = append(out, namedPolicy{"operator", operatorPolicy(f, arns)})
	}
	if c.json {
		return c.printJSON(out)
	}
	for i, p := range out {
		if i > 0 {
			fmt.Fprintln(c.stdout)
		}
		kind := "service"
		if *role != roleServices {
			kind = "role"
		}
		fmt.Fprintf(c.stdout, "# %s %s (%d statement(s))\n%s\n", kind, p.Name, len(p.Policy.Statement), p.Policy.JSON())
	}
	return nil
}

type arnBuilder struct{ partition, region, account string }

func (a arnBuilder) arn(service, name string) string {
	return fmt.Sprintf("arn:%s:%s:%s:%s:%s", a.partition, service, a.region, a.account, name)
}

// physicalName is the SNS/SQS name: FIFO ones end in ".fifo".
func physicalName(name string, fifo bool) string {
	if fifo && !strings.HasSuffix(name, ".fifo") {
		return name + ".fifo"
	}
	return name
}

// topicFIFO tells, for every topic of the file, whether it is FIFO.
func (f *topologyFile) topicFIFO() map[string]bool {
	fifo := map[string]bool{}
	for _, t := range f.Topics {
		fifo[t.Name] = t.FIFO
	}
	for _, q := range f.Queues {
		for _, t := range q.Topics {
			fifo[t] = fifo[t] || q.FIFO
		}
	}
	return fifo
}

// resources returns the ARNs of every topic, and of every queue with its
// dead-letter queue, sorted.
func (f *topologyFile) resources(a arnBuilder) (topics, queues edaaws.StringList) {
	for t, fifo := range f.topicFIFO() {
		topics = append(topics, a.arn("sns", physicalName(t, fifo)))
	}
	for _, q := range f.Queues {
		d := q.queue()
		queues = append(queues, a.arn("sqs", physicalName(d.Name, d.FIFO)))
		if d.DeadLetterQueue != "" {
			queues = append(queues, a.arn("sqs", physicalName(d.DeadLetterQueue, d.FIFO)))
		}
	}
	for _, l := range []*edaaws.StringList{&topics, &queues} {
		slices.Sort(*l)
		*l = slices.Compact(*l)
	}
	return topics, queues
}

// deployPolicy is what edactl topology plan and apply (and
// edaaws.Transport.Apply) call: create and inspect topics, queues and
// subscriptions, set queue attributes (visibility, redrive, policy) and
// subscription attributes (raw delivery, filter policy). Nothing is deleted.
// IAM authorizes the subscription calls on the subscription's topic (the
// service authorization reference gives Get/SetSubscriptionAttributes and
// Unsubscribe the resource type topic), not on the subscription ARN.
func deployPolicy(f *topologyFile, a arnBuilder) edaaws.PolicyDocument {
	topics, queues := f.resources(a)
	return edaaws.PolicyDocument{Version: edaaws.PolicyVersion, Statement: []edaaws.Statement{
		{Sid: "ManageTopics", Effect: "Allow", Resource: topics, Action: edaaws.StringList{
			"sns:CreateTopic", "sns:GetSubscriptionAttributes", "sns:GetTopicAttributes", "sns:ListSubscriptionsByTopic",
			"sns:SetSubscriptionAttributes", "sns:Subscribe"}},
		{Sid: "ManageQueues", Effect: "Allow", Resource: queues, Action: edaaws.StringList{
			"sqs:CreateQueue", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SetQueueAttributes"}},
	}}
}

// operatorPolicy is what edactl dlq and tail call: list queues, topics and
// subscriptions; peek into, redrive from and send to the topology's queues;
// publish a redriven message to its topic; and create, subscribe and delete
// tail's temporary queues (named edactl-tail-*).
func operatorPolicy(f *topologyFile, a arnBuilder) edaaws.PolicyDocument {
	topics, queues := f.resources(a)
	tail := edaaws.StringList{a.arn("sqs", tailQueuePrefix+"*")}
	return edaaws.PolicyDocument{Version: edaaws.PolicyVersion, Statement: []edaaws.Statement{
		{Sid: "List", Effect: "Allow", Resource: edaaws.StringList{"*"}, Action: edaaws.StringList{
			"sns:ListSubscriptions", "sns:ListTopics", "sqs:ListQueues"}},
		{Sid: "DeadLetters", Effect: "Allow", Resource: queues, Action: edaaws.StringList{
			"sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
			"sqs:ListDeadLetterSourceQueues", "sqs:ReceiveMessage", "sqs:SendMessage"}},
		// Tail subscribes its queue, reads the subscription and unsubscribes:
		// IAM checks the subscription calls on the topic.
		{Sid: "Topics", Effect: "Allow", Resource: topics, Action: edaaws.StringList{
			"sns:GetSubscriptionAttributes", "sns:GetTopicAttributes", "sns:ListSubscriptionsByTopic", "sns:Publish",
			"sns:Subscribe", "sns:Unsubscribe"}},
		{Sid: "TailQueues", Effect: "Allow", Resource: tail, Action: edaaws.StringList{
			"sqs:ChangeMessageVisibility", "sqs:CreateQueue", "sqs:DeleteMessage", "sqs:DeleteQueue",
			"sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:SetQueueAttributes"}},
	}}
}

// subscribers returns the queues subscribed to any of topics, each once.
func (f *topologyFile) subscribers(topics []string) []transport.Queue {
	var out []transport.Queue
	for _, q := range f.Queues {
		for _, t := range q.Topics {
			if slices.Contains(topics, t) {
				out = append(out, q.queue())
				break
			}
		}
	}
	return out
}
