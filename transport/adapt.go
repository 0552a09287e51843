package transport

import (
	"context"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Adapt turns a plain Watermill publisher and subscriber (gochannel, Kafka,
// NATS...) into a Transport. Declare records the queue; Subscribe(ctx, queue)
// subscribes to the queue's single topic on sub, so each queue gets what the
// Watermill subscriber gives a topic subscription. It declares no Features:
// no DLQ, FIFO or visibility timeout beyond what the backend itself does.
//
// Use it to run eda on a Watermill Pub/Sub that has no transport of its own,
// or to compare eda with plain Watermill on the same backend.
func Adapt(pub message.Publisher, sub message.Subscriber) Transport {
	return &adapted{Publisher: pub, sub: sub, queues: map[string]string{}}
}

type adapted struct {
	message.Publisher
	sub    message.Subscriber
	mu     sync.Mutex
	queues map[string]string
}

func (a *adapted) Declare(_ context.Context, q Queue) error {
	if err := q.Validate(); err != nil {
		return err
	}
	if len(q.Topics) != 1 {
		return fmt.Errorf("%w: queue %q: an adapted Watermill subscriber supports exactly one topic per queue, got %d", ErrInvalidConfig, q.Name, len(q.Topics))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.queues[q.Name] = q.Topics[0]
	return nil
}

func (a *adapted) Subscribe(ctx context.Context, queue string) (<-chan *message.Message, error) {
	a.mu.Lock()
	topic, ok := a.queues[queue]
	a.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownQueue, queue)
	}
	return a.sub.Subscribe(ctx, topic)
}

func (a *adapted) Close() error {
	perr := a.Publisher.Close()
	if serr := a.sub.Close(); serr != nil {
		return serr
	}
	return perr
}

func (a *adapted) Features() Features { return Features{} }
