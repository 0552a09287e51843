// A consumer not written with eda: reads one message from an SQS queue with
// the AWS SDK for JavaScript and prints what it finds, as JSON, on stdout.
// The CloudEvents attributes are message attributes of their own; the rest
// of the eda envelope is the JSON object in the eda_md attribute.
//
//   EDA_NODE_MODULES=.tools/emulator/node_modules ENDPOINT=http://127.0.0.1:4566 \
//   QUEUE_URL=... node interop_consumer.mjs
import { createRequire } from "node:module";

const require = createRequire(process.env.EDA_NODE_MODULES + "/");
const { SQSClient, ReceiveMessageCommand, DeleteMessageCommand } = require("@aws-sdk/client-sqs");

const sqs = new SQSClient({
  region: "us-east-1",
  endpoint: process.env.ENDPOINT,
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
});
const queueUrl = process.env.QUEUE_URL;

const deadline = Date.now() + 20_000;
while (Date.now() < deadline) {
  const { Messages = [] } = await sqs.send(new ReceiveMessageCommand({
    QueueUrl: queueUrl, MaxNumberOfMessages: 1, WaitTimeSeconds: 2, MessageAttributeNames: ["All"],
  }));
  if (Messages.length === 0) continue;
  const m = Messages[0];
  const attrs = Object.fromEntries(Object.entries(m.MessageAttributes ?? {}).map(([k, v]) => [k, v.StringValue]));
  const extensions = attrs.eda_md ? JSON.parse(attrs.eda_md) : {};
  const event = {
    id: attrs.ce_id,
    type: attrs.ce_type,
    source: attrs.ce_source,
    time: attrs.ce_time,
    specversion: attrs.ce_specversion,
    datacontenttype: extensions.ce_datacontenttype,
    schemaversion: extensions.ce_schemaversion,
    data: JSON.parse(m.Body),
    attributeNames: Object.keys(attrs).sort(),
  };
  await sqs.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: m.ReceiptHandle }));
  console.log(JSON.stringify(event));
  process.exit(0);
}
console.error("no message on", queueUrl);
process.exit(1);
