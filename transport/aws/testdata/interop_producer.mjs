// A producer not written with eda: publishes an event with the AWS SDK for
// JavaScript as just a type attribute (ce_type) and a JSON body, once to an
// SNS topic and once straight to an SQS queue, and prints the message ids as
// JSON on stdout.
//
//   EDA_NODE_MODULES=.tools/emulator/node_modules ENDPOINT=http://127.0.0.1:4566 \
//   TOPIC_ARN=... QUEUE_URL=... EVENT_TYPE=... node interop_producer.mjs
import { createRequire } from "node:module";

const require = createRequire(process.env.EDA_NODE_MODULES + "/");
const { SNSClient, PublishCommand } = require("@aws-sdk/client-sns");
const { SQSClient, SendMessageCommand } = require("@aws-sdk/client-sqs");

const client = {
  region: "us-east-1",
  endpoint: process.env.ENDPOINT,
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
};
const type = { ce_type: { DataType: "String", StringValue: process.env.EVENT_TYPE } };

const viaSNS = await new SNSClient(client).send(new PublishCommand({
  TopicArn: process.env.TOPIC_ARN,
  Message: JSON.stringify({ order_id: "from-sns", qty: 1 }),
  MessageAttributes: type,
}));
const viaSQS = await new SQSClient(client).send(new SendMessageCommand({
  QueueUrl: process.env.QUEUE_URL,
  MessageBody: JSON.stringify({ order_id: "from-sqs", qty: 2 }),
  MessageAttributes: type,
}));
console.log(JSON.stringify({ sns: viaSNS.MessageId, sqs: viaSQS.MessageId }));
