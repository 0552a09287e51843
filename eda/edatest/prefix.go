package edatest

import (
	"context"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// prefixedTransport isolates a test on a shared broker (SNS/SQS): every topic and
// queue name gets prefix on the broker, so a test body can use the same
// names ("orders", "inventory") as the service and as other tests running at
// the same time. The names a handler sees (the router's subscribe topic, a
// dead letter's source queue) are the test's own, without the prefix.
type prefixedTransport struct {
	tr     transport.Transport
	prefix string
}

func prefixed(tr transport.Transport, prefix string) transport.Transport {
	return &prefixedTransport{tr: tr, prefix: prefix}
}

var _ transport.Transport = (*prefixedTransport)(nil)

func (p *prefixedTransport) Publish(topic string, msgs ...*message.Message) error {
	return p.tr.Publish(p.prefix+topic, msgs...)
}

func (p *prefixedTransport) Declare(ctx context.Context, q transport.Queue) error {
	q.Name = p.prefix + q.Name
	if q.DeadLetterQueue != "" {
		q.DeadLetterQueue = p.prefix + q.DeadLetterQueue
	}
	topics := make([]string, len(q.Topics))
	for i, t := range q.Topics {
		topics[i] = p.prefix + t
	}
	q.Topics = topics
	return p.tr.Declare(ctx, q)
}

func (p *prefixedTransport) Subscribe(ctx context.Context, queue string) (<-chan *message.Message, error) {
	in, err := p.tr.Subscribe(ctx, p.prefix+queue)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for m := range in {
			if src := m.Metadata.Get(transport.MetadataDeadLetterSource); src != "" {
				m.Metadata.Set(transport.MetadataDeadLetterSource, strings.TrimPrefix(src, p.prefix))
			}
			select {
			case out <- m:
			case <-ctx.Done():
				m.Nack()
				for m := range in { // the transport closes in once ctx is done
					m.Nack()
				}
				return
			}
		}
	}()
	return out, nil
}

func (p *prefixedTransport) Features() transport.Features { return p.tr.Features() }

func (p *prefixedTransport) Close() error { return p.tr.Close() }

// declareTopics creates topics on the SNS/SQS transport that no declared
// queue subscribes to, as a deployment applies its topology: the AWS
// transport publishes only to a topic it knows to be ready, and never
// creates a bare one on its own (a publisher that does not know who
// subscribes could otherwise publish into the void), while a test may
// publish events nobody consumes, as on the memory and Postgres transports.
func (p *prefixedTransport) declareTopics(ctx context.Context, topics []string) error {
	at, ok := p.tr.(*edaaws.Transport)
	if !ok || len(topics) == 0 {
		return nil
	}
	var topo edaaws.Topology
	for _, t := range topics {
		topo.Topics = append(topo.Topics, edaaws.Topic{Name: p.prefix + t})
	}
	_, err := at.Apply(ctx, topo)
	return err
}
