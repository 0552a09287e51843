package aws

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/edaproject/eda/transport"
)

// PolicyVersion is the IAM policy language version of every document here.
const PolicyVersion = "2012-10-17"

// PolicyDocument is an IAM or resource policy.
type PolicyDocument struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one statement of a PolicyDocument.
type Statement struct {
	Sid       string                           `json:"Sid,omitempty"`
	Effect    string                           `json:"Effect"`
	Principal map[string]string                `json:"Principal,omitempty"`
	Action    StringList                       `json:"Action"`
	Resource  StringList                       `json:"Resource"`
	Condition map[string]map[string]StringList `json:"Condition,omitempty"`
}

// StringList is a JSON string or array of strings, as IAM writes them.
type StringList []string

// UnmarshalJSON accepts a string or an array of strings.
func (l *StringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = StringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

// JSON returns the document as indented JSON.
func (d PolicyDocument) JSON() string {
	b, _ := json.MarshalIndent(d, "", "  ") // only strings, maps and slices: cannot fail
	return string(b)
}

// queuePolicySid marks the statement eda manages in a queue policy.
const queuePolicySid = "eda-sns-to-sqs"

// queuePolicy returns the policy of a queue that lets exactly topicARNs send
// to it (SNS delivery, aws:SourceArn condition), keeping the other
// statements of existing (a policy JSON, may be empty).
func queuePolicy(queueARN string, topicARNs []string, existing string) (string, error) {
	var others []json.RawMessage
	if existing != "" {
		var doc struct {
			Statement []json.RawMessage `json:"Statement"`
		}
		if err := json.Unmarshal([]byte(existing), &doc); err != nil {
			return "", fmt.Errorf("aws: queue %s: parse existing policy: %w", queueARN, err)
		}
		for _, raw := range doc.Statement {
			var st struct{ Sid string }
			if json.Unmarshal(raw, &st) == nil && st.Sid == queuePolicySid {
				continue
			}
			others = append(others, raw)
		}
	}
	arns := slices.Clone(topicARNs)
	slices.Sort(arns)
	ours := Statement{
		Sid:       queuePolicySid,
		Effect:    "Allow",
		Principal: map[string]string{"Service": "sns.amazonaws.com"},
		Action:    StringList{"sqs:SendMessage"},
		Resource:  StringList{queueARN},
		Condition: map[string]map[string]StringList{"ArnEquals": {"aws:SourceArn": arns}},
	}
	raw, _ := json.Marshal(ours)
	doc := struct {
		Version   string            `json:"Version"`
		Statement []json.RawMessage `json:"Statement"`
	}{PolicyVersion, append(others, raw)}
	b, err := json.Marshal(doc)
	return string(b), err
}

// policySourceARNs returns the topic ARNs eda's statement of a queue policy
// allows.
func policySourceARNs(policy string) []string {
	if policy == "" {
		return nil
	}
	var doc PolicyDocument
	if json.Unmarshal([]byte(policy), &doc) != nil {
		return nil
	}
	for _, st := range doc.Statement {
		if st.Sid == queuePolicySid {
			for _, cond := range st.Condition {
				if arns, ok := cond["aws:SourceArn"]; ok {
					return arns
				}
			}
		}
	}
	return nil
}

// ServiceAccess is what one service does on SNS/SQS: the input of
// ServicePolicy.
type ServiceAccess struct {
	// Region, AccountID and Partition (default "aws") of the ARNs.
	Region    string
	AccountID string
	Partition string
	// Publishes lists the topics the service publishes to.
	Publishes []Topic
	// Consumes lists the queues the service consumes (as declared); their
	// dead-letter queues are included when ReadDeadLetters is set.
	Consumes        []transport.Queue
	ReadDeadLetters bool
	// DelayedDelivery lists the queues subscribed to the topics the service
	// publishes to, when it publishes with a delivery delay (eda.At,
	// eda.After, or a relay of such records): SNS has no per-message delay,
	// so the transport sends a delayed message to each subscribed queue
	// itself (SQS DelaySeconds). It needs GetSubscriptionAttributes on its
	// topics and GetQueueUrl and SendMessage on these queues.
	DelayedDelivery []transport.Queue
	// ClaimCheck is the service's Config.ClaimCheck: with a Bucket,
	// publishers may put and delete blobs under its Prefix, consumers get
	// them.
	ClaimCheck ClaimCheckConfig
}

// ServicePolicy returns the least-privilege IAM policy of a service, the
// calls a Transport with AutoCreate off makes (checked by a real IAM policy
// engine against every call recorded on the emulator):
//   - on the topics it publishes to: Publish (and PublishBatch), and
//     GetTopicAttributes and ListSubscriptionsByTopic, with which a
//     publisher finds a topic and its subscriptions;
//   - with DelayedDelivery, GetSubscriptionAttributes on those topics and
//     GetQueueUrl and SendMessage on the queues subscribed to them, where
//     the transport sends delayed messages itself;
//   - on the queues it consumes: receive, delete, change visibility (nack,
//     heartbeat, delayed redelivery) and get URL and attributes;
//   - Declare verifies a consumed queue's dead-letter queue (get URL and
//     attributes; consuming it too with ReadDeadLetters) and its
//     subscriptions: GetTopicAttributes, ListSubscriptionsByTopic and
//     GetSubscriptionAttributes on the queue's topics (IAM authorizes the
//     subscription calls on the topic: the service authorization reference
//     gives them the resource type topic, not a subscription ARN).
//
// It grants no create, subscribe, delete or policy rights: Apply the
// topology with another role (deployment; ClaimCheckDeployStatement for the
// claim-check bucket), and run the service with AutoCreate off. With a
// claim-check bucket, publishers may put and delete, consumers get, the
// objects under its prefix.
func ServicePolicy(a ServiceAccess) (PolicyDocument, error) {
	var errs []error
	if a.Region == "" {
		errs = append(errs, ErrMissingRegion)
	}
	if a.AccountID == "" {
		errs = append(errs, fmt.Errorf("%w: aws: policy: no account id", transport.ErrInvalidConfig))
	}
	if len(a.Publishes) == 0 && len(a.Consumes) == 0 {
		errs = append(errs, fmt.Errorf("%w: aws: policy: the service neither publishes nor consumes", transport.ErrInvalidConfig))
	}
	for _, q := range a.Consumes {
		if err := q.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, tp := range a.Publishes {
		if tp.Name == "" {
			errs = append(errs, fmt.Errorf("%w: aws: policy: empty topic name", transport.ErrInvalidConfig))
		}
	}
	if len(a.DelayedDelivery) > 0 && len(a.Publishes) == 0 {
		errs = append(errs, fmt.Errorf("%w: aws: policy: delayed delivery without a published topic", transport.ErrInvalidConfig))
	}
	for _, q := range a.DelayedDelivery {
		if q.Name == "" {
			errs = append(errs, fmt.Errorf("%w: aws: policy: empty delayed-delivery queue name", transport.ErrInvalidConfig))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return PolicyDocument{}, err
	}
	partition := a.Partition
	if partition == "" {
		partition = DefaultPartition
	}
	arn := func(service, name string) string {
		return fmt.Sprintf("arn:%s:%s:%s:%s:%s", partition, service, a.Region, a.AccountID, name)
	}
	sorted := func(l StringList) StringList {
		slices.Sort(l)
		return slices.Compact(l)
	}
	doc := PolicyDocument{Version: PolicyVersion}
	if len(a.Publishes) > 0 {
		var topics StringList
		for _, tp := range a.Publishes {
			topics = append(topics, arn("sns", physical(tp.Name, tp.FIFO)))
		}
		doc.Statement = append(doc.Statement, Statement{
			Sid:      "PublishToTopics",
			Effect:   "Allow",
			Action:   StringList{"sns:GetTopicAttributes", "sns:ListSubscriptionsByTopic", "sns:Publish"},
			Resource: sorted(topics),
		})
		if len(a.DelayedDelivery) > 0 {
			var queues StringList
			for _, q := range a.DelayedDelivery {
				queues = append(queues, arn("sqs", physical(q.Name, q.FIFO)))
			}
			doc.Statement = append(doc.Statement,
				Statement{
					Sid: "DelayedDeliveryFindSubscriptions", Effect: "Allow",
					Action: StringList{"sns:GetSubscriptionAttributes"}, Resource: sorted(topics),
				},
				Statement{
					Sid: "DelayedDeliverySend", Effect: "Allow",
					Action: StringList{"sqs:GetQueueUrl", "sqs:SendMessage"}, Resource: sorted(queues),
				})
		}
	}
	if len(a.Consumes) > 0 {
		var queues, dlqs, topics StringList
		for _, q := range a.Consumes {
			q = q.WithDefaults()
			queues = append(queues, arn("sqs", physical(q.Name, q.FIFO)))
			if q.DeadLetterQueue != "" {
				dlq := arn("sqs", physical(q.DeadLetterQueue, q.FIFO))
				if a.ReadDeadLetters {
					queues = append(queues, dlq)
				} else {
					dlqs = append(dlqs, dlq)
				}
			}
			for _, tp := range q.Topics {
				topics = append(topics, arn("sns", physical(tp, q.FIFO)))
			}
		}
		queues = sorted(queues)
		dlqs = slices.DeleteFunc(sorted(dlqs), func(d string) bool { return slices.Contains(queues, d) })
		doc.Statement = append(doc.Statement, Statement{
			Sid:    "ConsumeQueues",
			Effect: "Allow",
			Action: StringList{
				"sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
				"sqs:GetQueueUrl", "sqs:ReceiveMessage",
			},
			Resource: queues,
		})
		if len(dlqs) > 0 {
			doc.Statement = append(doc.Statement, Statement{
				Sid:      "VerifyDeadLetterQueues",
				Effect:   "Allow",
				Action:   StringList{"sqs:GetQueueAttributes", "sqs:GetQueueUrl"},
				Resource: dlqs,
			})
		}
		if len(topics) > 0 {
			doc.Statement = append(doc.Statement, Statement{
				Sid:    "VerifySubscriptions",
				Effect: "Allow",
				Action: StringList{
					"sns:GetSubscriptionAttributes", "sns:GetTopicAttributes", "sns:ListSubscriptionsByTopic",
				},
				Resource: sorted(topics),
			})
		}
	}
	if cc := a.ClaimCheck.withDefaults(); cc.Bucket != "" {
		blobs := StringList{fmt.Sprintf("arn:%s:s3:::%s/%s*", partition, cc.Bucket, cc.Prefix)}
		if len(a.Publishes) > 0 {
			doc.Statement = append(doc.Statement, Statement{
				Sid: "ClaimCheckPut", Effect: "Allow", Resource: blobs,
				Action: StringList{"s3:DeleteObject", "s3:PutObject"},
			})
		}
		if len(a.Consumes) > 0 {
			doc.Statement = append(doc.Statement, Statement{
				Sid: "ClaimCheckGet", Effect: "Allow", Resource: blobs,
				Action: StringList{"s3:GetObject"},
			})
		}
	}
	// GetCallerIdentity needs no permission; Config.AccountID skips it anyway.
	return doc, nil
}

// ClaimCheckDeployStatement is what Plan and Apply need on the claim-check
// bucket of cc, for the deployment role: create it (CreateBucket), check it
// (HeadBucket: s3:ListBucket) and read and write its lifecycle rules
// (GetBucketLifecycleConfiguration, PutBucketLifecycleConfiguration).
// partition "" means DefaultPartition.
func ClaimCheckDeployStatement(partition string, cc ClaimCheckConfig) Statement {
	if partition == "" {
		partition = DefaultPartition
	}
	return Statement{
		Sid: "ClaimCheckBucket", Effect: "Allow",
		Resource: StringList{fmt.Sprintf("arn:%s:s3:::%s", partition, cc.Bucket)},
		Action:   StringList{"s3:CreateBucket", "s3:GetLifecycleConfiguration", "s3:ListBucket", "s3:PutLifecycleConfiguration"},
	}
}
