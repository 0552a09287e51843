package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// startListenerLocked starts, once, the goroutine that LISTENs on the
// transport's channel and wakes the consumers of the queue each notification
// names. It has its own connection, outside the pool, so that it never takes
// a pooled connection away from publishers and consumers. t.mu is held.
func (t *Transport) startListenerLocked() {
	if t.listening {
		return
	}
	t.listening = true
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.listen(ctx)
	}()
}

func (t *Transport) listen(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		err := t.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		failures++
		t.log.Warn("postgres transport: LISTEN connection lost; consumers poll until it is back", "error", err, "failures", failures)
		timer := time.NewTimer(min(time.Duration(failures)*100*time.Millisecond, 5*time.Second))
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return
		}
	}
}

func (t *Transport) listenOnce(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, t.pool.Config().ConnConfig.Copy())
	if err != nil {
		return classify("listen: connect", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{t.channel}.Sanitize()); err != nil {
		return classify("listen", err)
	}
	t.wakeAll() // notifications sent while not listening are lost: look now
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return classify("listen: wait", err)
		}
		t.wakeQueue(n.Payload)
	}
}

func (t *Transport) wakeQueue(queue string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for w := range t.waiters[queue] {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

func (t *Transport) wakeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ws := range t.waiters {
		for w := range ws {
			select {
			case w <- struct{}{}:
			default:
			}
		}
	}
}

func (t *Transport) unregister(queue string, w chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.waiters[queue], w)
	if len(t.waiters[queue]) == 0 {
		delete(t.waiters, queue)
	}
}

// notifyLater has the queues subscribed to topic notified soon, by the
// notifier goroutine, which sends one NOTIFY statement for every topic
// published since its last one.
func (t *Transport) notifyLater(topic string) {
	t.mu.Lock()
	if t.closed { // consumers elsewhere find the messages at their next poll
		t.mu.Unlock()
		return
	}
	t.toNotify[topic] = struct{}{}
	if !t.notifying {
		t.notifying = true
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.notifier()
		}()
	}
	t.mu.Unlock()
	select {
	case t.notifyKick <- struct{}{}:
	default:
	}
}

// notifyInterval is the least time between two NOTIFY statements of a
// transport: under a stream of publishes, one statement covers all the
// topics published in that time; an idle consumer wakes that much later at
// most.
const notifyInterval = 5 * time.Millisecond

func (t *Transport) notifier() {
	for {
		select {
		case <-t.notifyKick:
			t.sendNotifications()
		case <-t.closing:
			t.sendNotifications()
			return
		}
		pause := time.NewTimer(notifyInterval)
		select {
		case <-pause.C:
		case <-t.closing:
			pause.Stop()
		}
	}
}

func (t *Transport) sendNotifications() {
	t.mu.Lock()
	topics := make([]string, 0, len(t.toNotify))
	for topic := range t.toNotify {
		topics = append(topics, topic)
	}
	clear(t.toNotify)
	t.mu.Unlock()
	if len(topics) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	b := asyncCommit() // nothing to make durable: a lost NOTIFY costs a poll
	b.Queue(t.q.notify, topics, t.channel)
	if err := t.pool.SendBatch(ctx, b).Close(); err != nil {
		t.log.Warn("postgres transport: NOTIFY failed; consumers find the messages at their next poll", "topics", topics, "error", classify("notify", err))
	}
}
