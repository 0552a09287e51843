// Package awscalls records the AWS API calls a program makes, as IAM sees
// them (action, resource ARN, condition keys), and evaluates them against
// IAM policies with a real policy engine (@cloud-copilot/iam-simulate, run
// as a separate Node program by scripts/iamsim.sh). Tests only: it proves
// that the policies eda generates allow what the code calls, and nothing of
// another service.
//
// A Recorder is an aws-sdk-go-v2 middleware installed through
// aws.Config.APIOptions, so it sees every operation of every client built
// from that config, whatever the wire protocol (SNS query, SQS JSON, S3
// REST). It maps each operation to the IAM action that authorizes it (the
// batch operations to their single action) and its input to the resource
// of that action's resource type in the service authorization reference:
// QueueUrl and QueueName to the queue ARN, TopicArn to the topic,
// SubscriptionArn to its topic (the reference puts Get/SetSubscription-
// Attributes and Unsubscribe on the topic), Bucket and Key to the bucket or
// object, and "*" for the list actions that take no resource. An operation
// it cannot map is recorded with an empty Resource, which Evaluate reports
// as a failure: new calls are caught, not ignored.
package awscalls
