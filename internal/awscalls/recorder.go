package awscalls

import (
	"context"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// Call is one AWS API call as IAM authorizes it.
type Call struct {
	// Operation is the API operation, e.g. "SQS.DeleteMessageBatch".
	Operation string `json:"operation"`
	// Action is the IAM action, e.g. "sqs:DeleteMessage".
	Action string `json:"action"`
	// Resource is the ARN IAM checks, "*" for an action without a resource
	// type, "" when the recorder could not map the call.
	Resource string `json:"resource"`
	// Context holds the condition keys of the request that matter (e.g.
	// sns:Protocol and sns:Endpoint of Subscribe).
	Context map[string]string `json:"context,omitempty"`
	// NoAuth marks a call that needs no permission (sts:GetCallerIdentity).
	NoAuth bool `json:"noAuth,omitempty"`
	// Input is what the operation was called with (QueueUrl, TopicArn, ...),
	// for the failure messages.
	Input map[string]string `json:"input,omitempty"`
}

func (c Call) key() string {
	keys := make([]string, 0, len(c.Context))
	for k, v := range c.Context {
		keys = append(keys, k+"="+v)
	}
	slices.Sort(keys)
	return c.Action + " " + c.Resource + " " + strings.Join(keys, ",")
}

// Recorder records the calls of the SDK clients built from the configs it
// is installed in. Safe for concurrent use.
type Recorder struct {
	region, account, partition string

	mu    sync.Mutex
	calls []Call
	seen  map[string]bool
}

// New returns a Recorder; region, account and partition (default "aws")
// build the ARNs of calls that name a queue (QueueName) or a topic (Name).
func New(region, account, partition string) *Recorder {
	if partition == "" {
		partition = "aws"
	}
	return &Recorder{region: region, account: account, partition: partition, seen: map[string]bool{}}
}

// Install adds the recorder to cfg's API options: every client built from
// cfg afterwards records through it.
func (r *Recorder) Install(cfg *awssdk.Config) {
	cfg.APIOptions = append(cfg.APIOptions, func(s *middleware.Stack) error {
		return s.Initialize.Add(middleware.InitializeMiddlewareFunc("awscalls.Recorder",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				r.record(awsmiddleware.GetServiceID(ctx), awsmiddleware.GetOperationName(ctx), in.Parameters)
				return next.HandleInitialize(ctx, in)
			}), middleware.Before)
	})
}

// Calls returns the distinct calls recorded so far, in the order first made.
func (r *Recorder) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// Reset forgets the calls recorded so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls, r.seen = nil, map[string]bool{}
}

func (r *Recorder) record(service, op string, params any) {
	c := r.call(service, op, params)
	r.mu.Lock()
	defer r.mu.Unlock()
	if k := c.key(); !r.seen[k] {
		r.seen[k] = true
		r.calls = append(r.calls, c)
	}
}

// batchAction maps operations to the IAM action that authorizes them when
// the names differ (the service authorization reference's operations
// table).
var batchAction = map[string]string{
	"SQS.SendMessageBatch":             "sqs:SendMessage",
	"SQS.DeleteMessageBatch":           "sqs:DeleteMessage",
	"SQS.ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
	"SNS.PublishBatch":                 "sns:Publish",
	"S3.HeadObject":                    "s3:GetObject",
	"S3.DeleteObjects":                 "s3:DeleteObject",
	"S3.ListObjectsV2":                 "s3:ListBucket",
	"S3.HeadBucket":                    "s3:ListBucket",
}

// wildcard are the actions without a resource type: IAM checks them on "*".
var wildcard = map[string]bool{
	"sqs:ListQueues": true, "sns:ListTopics": true, "sns:ListSubscriptions": true,
}

func (r *Recorder) call(service, op string, params any) Call {
	c := Call{Operation: service + "." + op, Input: stringFields(params)}
	c.Action = batchAction[c.Operation]
	if c.Action == "" {
		c.Action = strings.ToLower(strings.ReplaceAll(service, " ", "")) + ":" + op
	}
	in := c.Input
	arn := func(svc, name string) string {
		return fmt.Sprintf("arn:%s:%s:%s:%s:%s", r.partition, svc, r.region, r.account, name)
	}
	switch {
	case c.Action == "sts:GetCallerIdentity":
		c.NoAuth, c.Resource = true, "*"
	case wildcard[c.Action]:
		c.Resource = "*"
	case service == "SQS" && in["QueueUrl"] != "":
		c.Resource = r.queueARN(in["QueueUrl"])
	case service == "SQS" && in["QueueName"] != "":
		c.Resource = arn("sqs", in["QueueName"])
	case service == "SQS" && in["SourceArn"] != "": // Start/ListMessageMoveTask(s)
		c.Resource = in["SourceArn"]
	case service == "SNS" && in["TopicArn"] != "":
		c.Resource = in["TopicArn"]
		if op == "Subscribe" {
			c.Context = map[string]string{"sns:Protocol": in["Protocol"], "sns:Endpoint": in["Endpoint"]}
		}
	case service == "SNS" && in["SubscriptionArn"] != "":
		// arn:...:topic:subscription-id: the reference authorizes
		// subscription calls on the topic.
		if i := strings.LastIndexByte(in["SubscriptionArn"], ':'); i > 0 {
			c.Resource = in["SubscriptionArn"][:i]
		}
	case service == "SNS" && op == "CreateTopic":
		c.Resource = arn("sns", in["Name"])
	case service == "S3" && in["Bucket"] != "":
		c.Resource = fmt.Sprintf("arn:%s:s3:::%s", r.partition, in["Bucket"])
		if in["Key"] != "" {
			c.Resource += "/" + in["Key"]
		} else if strings.HasSuffix(c.Action, "Object") { // DeleteObjects: the keys are in the body
			c.Resource += "/*"
		}
	}
	return c
}

// queueARN maps a queue URL (https://sqs.region.amazonaws.com/account/name,
// or an emulator's http://host:port/account/name) to its ARN.
func (r *Recorder) queueARN(queueURL string) string {
	u, err := url.Parse(queueURL)
	if err != nil {
		return ""
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 {
		return ""
	}
	return fmt.Sprintf("arn:%s:sqs:%s:%s:%s", r.partition, r.region, parts[0], parts[1])
}

// stringFields returns the string (and *string) fields of an operation's
// input struct.
func stringFields(params any) map[string]string {
	v := reflect.ValueOf(params)
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil
	}
	out := map[string]string{}
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		if !v.Type().Field(i).IsExported() {
			continue
		}
		if f.Kind() == reflect.Pointer && !f.IsNil() {
			f = f.Elem()
		}
		if f.Kind() == reflect.String && f.String() != "" {
			out[name] = f.String()
		}
	}
	return out
}
