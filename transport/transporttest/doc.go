// Package transporttest is the conformance suite every eda transport runs:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, transporttest.Harness{
//			New: func(t *testing.T) transport.Transport { return newTransport(t) },
//		})
//	}
//
// It checks the SNS→SQS contract of package transport: round trip, fan-out
// to several queues, competing consumers, redelivery after nack and after a
// consumer crash, receive counts, dead-lettering after MaxReceiveCount, FIFO
// per-group order under concurrency, deduplication, metadata round trip, the
// message size boundary, shutdown without loss and concurrent publishers. A
// check that depends on a capability runs only when the transport's
// Features declare it, so a transport is done when the suite passes with
// every capability it really has declared.
//
// Every test uses its own topics and queues (unique names), so the suite can
// run against a shared broker and its tests run in parallel.
package transporttest
