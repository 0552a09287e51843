package aws_test

import (
	"context"
	"fmt"
	"os"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

type OrderPlaced struct {
	OrderID string `json:"order_id"`
}

func (OrderPlaced) EventName() string { return "orders.OrderPlaced" }

// The same typed handler as on the memory transport, on SNS→SQS (here the
// emulator: scripts/emulator.sh up). In production, AWS comes from
// config.LoadDefaultConfig and Endpoint stays empty.
func Example() {
	ep := os.Getenv("EDA_AWS_ENDPOINT")
	if ep == "" {
		ep = "http://127.0.0.1:4566"
	}
	tr, err := edaaws.New(edaaws.Config{
		AWS: awssdk.Config{
			Region:      "us-east-1",
			Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
		},
		Endpoint:   ep,
		AutoCreate: true, // let Declare create topics, queues and subscriptions
	}.ForFauxqs()) // the emulator's quirks; not on AWS
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tr.Close()
	suffix := uniq("example") // fresh names on a long-lived emulator
	app, _ := eda.New(eda.Config{Transport: tr, Source: "orders-service"})
	_ = eda.Register[OrderPlaced](app, "orders-"+suffix)
	handled := make(chan string)
	_ = eda.Handle(app, "inventory-"+suffix, func(ctx context.Context, e OrderPlaced) error {
		env, _ := eda.EnvelopeFromContext(ctx)
		handled <- fmt.Sprintf("%s %s from %s", env.Type, e.OrderID, env.Source)
		return nil
	})

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- app.Run(ctx) }()
	<-app.Running()
	if err := app.Publish(ctx, OrderPlaced{OrderID: "o-42"}); err != nil {
		fmt.Println(err)
	}
	fmt.Println(<-handled)
	stop()
	fmt.Println(<-done)
	// Output:
	// orders.OrderPlaced o-42 from orders-service
	// <nil>
}

// The IAM policy a service needs: publish on its topics, consume its queues.
func ExampleServicePolicy() {
	doc, err := edaaws.ServicePolicy(edaaws.ServiceAccess{
		Region:    "eu-west-1",
		AccountID: "123456789012",
		Publishes: []edaaws.Topic{{Name: "orders"}},
		Consumes:  []transport.Queue{{Name: "inventory", Topics: []string{"payments"}}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(doc.JSON())
	// Output:
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
	//         "arn:aws:sns:eu-west-1:123456789012:orders"
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
	//         "arn:aws:sqs:eu-west-1:123456789012:inventory"
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
	//         "arn:aws:sns:eu-west-1:123456789012:payments"
	//       ]
	//     }
	//   ]
	// }
}

// Topology as code: Plan shows what Apply would do; Apply is idempotent.
func ExampleTransport_Apply() {
	ep := os.Getenv("EDA_AWS_ENDPOINT")
	if ep == "" {
		ep = "http://127.0.0.1:4566"
	}
	tr, err := edaaws.New(edaaws.Config{
		AWS:      awssdk.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")},
		Endpoint: ep,
	}.ForFauxqs())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tr.Close()
	ctx := context.Background()
	orders, inventory := uniq("orders"), uniq("inventory")
	topo := edaaws.Topology{Queues: []edaaws.Queue{{
		Queue:          transport.Queue{Name: inventory, Topics: []string{orders}, MaxReceiveCount: 5},
		FilterPolicies: map[string]string{orders: `{"ce_type":["orders.OrderPlaced"]}`},
	}}}
	plan, err := tr.Apply(ctx, topo)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, c := range plan.Changes {
		fmt.Println(c.Action)
	}
	again, _ := tr.Plan(ctx, topo)
	fmt.Println(again)
	// Output:
	// create-topic
	// create-queue
	// create-queue
	// subscribe
	// no changes
}
