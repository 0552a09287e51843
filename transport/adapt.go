package transport

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Adapt turns a plain Watermill publisher and subscriber (gochannel, Kafka,
// NATS...) into a Transport.
//
// Declare opens one subscription of sub to the queue's single topic, and
// Subscribe(ctx, queue) starts a consumer that reads from it: the consumers
// of a queue share its subscription, so each message goes to one of them
// (they compete), and a nacked one comes back to any of them. Whether they
// work in parallel depends on sub: gochannel hands out the next message
// without waiting for the previous one's ack, so they do; a subscriber that
// waits for each ack serializes them. Messages published after Declare wait
// in sub for a consumer, as much as sub keeps them (gochannel: in memory).
//
// Every queue shares sub, so two queues on one topic must each get their own
// copy from it: true of gochannel; for a subscriber with a consumer group
// (Kafka, NATS JetStream, Redis streams), use AdaptQueues with a group per
// queue.
//
// It declares no Features: no dead-letter queue, FIFO, receive count or
// visibility timeout, and Declare refuses a queue that asks for one
// (MaxReceiveCount, FIFO) with ErrInvalidConfig rather than ignore it.
//
// Use it to run eda on a Watermill Pub/Sub that has no transport of its own,
// or to compare eda with plain Watermill on the same backend.
func Adapt(pub message.Publisher, sub message.Subscriber) Transport {
	return AdaptQueues(pub, func(string) (message.Subscriber, error) { return sub, nil })
}

// AdaptQueues is Adapt with a subscriber per queue, made by newSub at the
// queue's first Declare: a subscriber whose consumer group is named after
// the queue, so that each queue gets every message of its topic and the
// consumers of one queue, in every process, compete for them. The
// subscribers newSub returns are closed by Close (each once).
func AdaptQueues(pub message.Publisher, newSub func(queue string) (message.Subscriber, error)) Transport {
	ctx, cancel := context.WithCancel(context.Background())
	return &adapted{Publisher: pub, newSub: newSub, queues: map[string]*adaptedQueue{}, ctx: ctx, cancel: cancel}
}

type adapted struct {
	message.Publisher
	newSub func(queue string) (message.Subscriber, error)
	ctx    context.Context // the queues' subscriptions; cancelled by Close
	cancel context.CancelFunc

	mu     sync.Mutex
	queues map[string]*adaptedQueue
	subs   []message.Subscriber // distinct, in order of creation
	closed bool
}

type adaptedQueue struct {
	topic string
	in    <-chan *message.Message // the queue's one subscription, read by every consumer
}

func (a *adapted) Declare(_ context.Context, q Queue) error {
	if err := q.Validate(); err != nil {
		return err
	}
	var errs []error
	if len(q.Topics) != 1 {
		errs = append(errs, fmt.Errorf("%w: queue %q: an adapted Watermill subscriber supports exactly one topic per queue, got %d", ErrInvalidConfig, q.Name, len(q.Topics)))
	}
	if q.MaxReceiveCount > 0 {
		errs = append(errs, fmt.Errorf("%w: queue %q: MaxReceiveCount %d: an adapted Watermill subscriber has no dead-letter queue (use middleware.Poison)", ErrInvalidConfig, q.Name, q.MaxReceiveCount))
	}
	if q.FIFO {
		errs = append(errs, fmt.Errorf("%w: queue %q: an adapted Watermill subscriber has no FIFO queues", ErrInvalidConfig, q.Name))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	if have, ok := a.queues[q.Name]; ok {
		if have.topic != q.Topics[0] {
			return fmt.Errorf("%w: queue %q is declared on topic %q, not %q", ErrInvalidConfig, q.Name, have.topic, q.Topics[0])
		}
		return nil
	}
	sub, err := a.newSub(q.Name)
	if err != nil {
		return fmt.Errorf("transport: adapted subscriber for queue %q: %w", q.Name, err)
	}
	if sub == nil {
		return fmt.Errorf("%w: queue %q: the subscriber is nil", ErrInvalidConfig, q.Name)
	}
	in, err := sub.Subscribe(a.ctx, q.Topics[0])
	if err != nil {
		return fmt.Errorf("transport: adapted subscriber: subscribe queue %q to topic %q: %w", q.Name, q.Topics[0], err)
	}
	a.queues[q.Name] = &adaptedQueue{topic: q.Topics[0], in: in}
	for _, s := range a.subs {
		if s == sub {
			return nil
		}
	}
	a.subs = append(a.subs, sub)
	return nil
}

// Subscribe starts a consumer of queue: it takes messages from the queue's
// subscription until ctx is done, and gives each its context, so a handler
// sees its consumer stop. A message taken when ctx ends is nacked back.
func (a *adapted) Subscribe(ctx context.Context, queue string) (<-chan *message.Message, error) {
	a.mu.Lock()
	q, ok := a.queues[queue]
	closed := a.closed
	a.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownQueue, queue)
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for {
			select {
			case m, ok := <-q.in:
				if !ok {
					return
				}
				if ctx.Err() != nil { // taken as the consumer stopped: back to the queue
					m.Nack()
					return
				}
				m.SetContext(ctx)
				select {
				case out <- m:
				case <-ctx.Done():
					m.Nack()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (a *adapted) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	subs := a.subs
	a.mu.Unlock()
	a.cancel()
	errs := []error{a.Publisher.Close()}
	for _, s := range subs {
		if !samePubSub(a.Publisher, s) {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

// samePubSub reports whether pub and sub are one value (gochannel is both),
// which Close closes once.
func samePubSub(pub message.Publisher, sub message.Subscriber) bool {
	s, ok := sub.(message.Publisher)
	return ok && s == pub
}

func (a *adapted) Features() Features { return Features{} }
