package main

import (
	"context"
	"os"
)

// The IAM policy of the orders system's notification service, from the
// topology file (no AWS call: the account and region are given).
func Example_iam() {
	run(context.Background(), []string{
		"iam", "-f", "testdata/orders-topology.json", "-service", "notification",
		"-account", "123456789012", "-region", "eu-west-1",
	}, os.Stdout, os.Stderr)
	// Output:
	// # service notification (4 statement(s))
	// {
	//   "Version": "2012-10-17",
	//   "Statement": [
	//     {
	//       "Sid": "PublishToTopics",
	//       "Effect": "Allow",
	//       "Action": [
	//         "sns:GetTopicAttributes",
	//         "sns:ListSubscriptionsByTopic",
	//         "sns:Publish"
	//       ],
	//       "Resource": [
	//         "arn:aws:sns:eu-west-1:123456789012:orders-poison"
	//       ]
	//     },
	//     {
	//       "Sid": "ConsumeQueues",
	//       "Effect": "Allow",
	//       "Action": [
	//         "sqs:ChangeMessageVisibility",
	//         "sqs:DeleteMessage",
	//         "sqs:GetQueueAttributes",
	//         "sqs:GetQueueUrl",
	//         "sqs:ReceiveMessage"
	//       ],
	//       "Resource": [
	//         "arn:aws:sqs:eu-west-1:123456789012:notification"
	//       ]
	//     },
	//     {
	//       "Sid": "VerifyDeadLetterQueues",
	//       "Effect": "Allow",
	//       "Action": [
	//         "sqs:GetQueueAttributes",
	//         "sqs:GetQueueUrl"
	//       ],
	//       "Resource": [
	//         "arn:aws:sqs:eu-west-1:123456789012:notification-dlq"
	//       ]
	//     },
	//     {
	//       "Sid": "VerifySubscriptions",
	//       "Effect": "Allow",
	//       "Action": [
	//         "sns:GetSubscriptionAttributes",
	//         "sns:GetTopicAttributes",
	//         "sns:ListSubscriptionsByTopic"
	//       ],
	//       "Resource": [
	//         "arn:aws:sns:eu-west-1:123456789012:orders"
	//       ]
	//     }
	//   ]
	// }
}
