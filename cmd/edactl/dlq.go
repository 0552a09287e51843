package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
)

// poisonPrefix starts every metadata key of the poison middleware.
const poisonPrefix = "eda_poison_"

// Dead-letter queue kinds.
const (
	kindDeadLetter = "dead-letter" // another queue's redrive policy moves messages here
	kindPoison     = "poison"      // the poison middleware publishes here (by name)
	kindNamed      = "named"       // named like a dead-letter queue ("-dlq")
)

// deadQueue is one dead-letter or poison queue.
type deadQueue struct {
	Queue    string   `json:"queue"`
	Kind     string   `json:"kind"`
	Sources  []string `json:"sources,omitempty"`
	Messages int64    `json:"messages"` // waiting
	InFlight int64    `json:"inFlight"` // received by someone, not yet settled
}

// deadMessage is one message in a dead-letter queue.
type deadMessage struct {
	ID           string            `json:"id"` // SQS message id, or the Postgres row id
	EventID      string            `json:"eventId"`
	Type         string            `json:"type"`
	Time         string            `json:"time,omitempty"`
	Reason       string            `json:"reason"`
	Error        string            `json:"error,omitempty"`
	Handler      string            `json:"handler,omitempty"`
	Attempts     string            `json:"attempts,omitempty"`
	Deliveries   string            `json:"deliveries,omitempty"`
	FirstFailure string            `json:"firstFailure,omitempty"`
	LastFailure  string            `json:"lastFailure,omitempty"`
	RedriveTo    string            `json:"redriveTo,omitempty"` // where redrive would send it
	ReceiveCount string            `json:"receiveCount,omitempty"`
	ClaimCheck   string            `json:"claimCheck,omitempty"`
	Metadata     map[string]string `json:"metadata"`
	Payload      string            `json:"payload"`
}

// newDeadMessage describes a message from its metadata; dlqSource is the
// queue the broker moved it from, if known.
func newDeadMessage(id string, md message.Metadata, payload []byte, dlqSource string) deadMessage {
	m := deadMessage{
		ID: id, EventID: md.Get(eda.MetadataID), Type: md.Get(eda.MetadataType), Time: md.Get(eda.MetadataTime),
		Reason: md.Get(middleware.MetadataPoisonReason), Error: md.Get(middleware.MetadataPoisonError),
		Handler: md.Get(middleware.MetadataPoisonHandler), Attempts: md.Get(middleware.MetadataPoisonAttempts),
		Deliveries:   md.Get(middleware.MetadataPoisonDeliveries),
		FirstFailure: md.Get(middleware.MetadataPoisonFirstFailure), LastFailure: md.Get(middleware.MetadataPoisonLastFailure),
		Metadata: md, Payload: string(payload),
	}
	if m.Reason == "" && dlqSource != "" {
		m.Reason = "max_receive_count" // the broker's redrive policy: no reason recorded
	}
	if t, err := redriveTarget(dlqSource, md, ""); err == nil {
		m.RedriveTo = t.String()
	}
	return m
}

// target is where a redriven message goes: a queue, or else a topic.
type target struct{ queue, topic string }

func (t target) String() string {
	if t.queue != "" {
		return "queue " + t.queue
	}
	return "topic " + t.topic
}

// errNoSource: redrive does not know where a message came from.
var errNoSource = errors.New("no source queue known (no dead-letter source, no poison metadata): pass -to")

// redriveTarget picks where a dead message goes back to: -to, else the
// queue the broker dead-lettered it from, else the queue (then topic) the
// poison middleware recorded.
func redriveTarget(dlqSource string, md message.Metadata, to string) (target, error) {
	switch {
	case to != "":
		return target{queue: to}, nil
	case dlqSource != "":
		return target{queue: dlqSource}, nil
	case md.Get(middleware.MetadataPoisonQueue) != "":
		return target{queue: md.Get(middleware.MetadataPoisonQueue)}, nil
	case md.Get(middleware.MetadataPoisonTopic) != "":
		return target{topic: md.Get(middleware.MetadataPoisonTopic)}, nil
	}
	return target{}, errNoSource
}

// stripped returns md without the redrive keys.
func stripped(md message.Metadata) message.Metadata {
	out := make(message.Metadata, len(md))
	for k, v := range md {
		if !isRedriveKey(k) {
			out[k] = v
		}
	}
	return out
}

// groupID returns the FIFO group of a message.
func groupID(stored string, md message.Metadata) string {
	if stored != "" {
		return stored
	}
	return md.Get(transport.MetadataGroupID)
}

type redriveOptions struct {
	limit int
	ids   map[string]bool // event ids or message ids; empty: all
	to    string
}

func (o redriveOptions) wants(id, eventID string) bool {
	return len(o.ids) == 0 || o.ids[id] || (eventID != "" && o.ids[eventID])
}

type movedMessage struct {
	ID      string `json:"id"`
	EventID string `json:"eventId"`
	Type    string `json:"type"`
	To      string `json:"to"`
}

type failedMove struct {
	ID      string `json:"id"`
	EventID string `json:"eventId"`
	Error   string `json:"error"`
}

type redriveResult struct {
	Moved  []movedMessage `json:"moved"`
	Failed []failedMove   `json:"failed"`
}

// dlqBackend is a transport's dead-letter queues.
type dlqBackend interface {
	list(ctx context.Context, prefix string) ([]deadQueue, error)
	peek(ctx context.Context, queue string, limit int) ([]deadMessage, error)
	redrive(ctx context.Context, queue string, o redriveOptions) (redriveResult, error)
	close()
}

func runDLQ(ctx context.Context, c *cli, args []string) error {
	sub, args, err := subcommand(args, "list", "show", "redrive")
	if err != nil {
		return err
	}
	usage := "-transport aws|postgres [flags]"
	switch sub {
	case "show":
		usage = "-transport aws|postgres -queue name [-n count]"
	case "redrive":
		usage = "-transport aws|postgres -queue name [-id id]... [-to queue] [-n count]"
	}
	fs := c.flagSet("dlq "+sub, usage)
	kind := fs.String("transport", envOr("EDA_TRANSPORT", ""), "aws or postgres (env EDA_TRANSPORT)")
	var af awsFlags
	af.register(fs)
	var pf pgFlags
	pf.register(fs)
	prefix := fs.String("prefix", "", "list: only queues whose name starts with this")
	queue := fs.String("queue", "", "show, redrive: the dead-letter or poison queue")
	limit := fs.Int("n", 0, "show: messages to show (default 20); redrive: messages to move at most (default all)")
	to := fs.String("to", "", "redrive: send every message to this queue instead of its source")
	visibility := fs.Duration("visibility", 30*time.Second, "aws: how long show and redrive hold the messages they received")
	ids := map[string]bool{}
	fs.Func("id", "redrive: only this event id or message id (repeatable; ids may also be given as arguments)", func(s string) error {
		ids[s] = true
		return nil
	})
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if sub == "redrive" {
		for _, p := range pos {
			ids[p] = true
		}
	} else if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	if sub != "list" && *queue == "" {
		return usagef("-queue is required")
	}
	if *limit < 0 {
		return usagef("-n %d: want a positive count", *limit)
	}
	if *limit == 0 && sub == "show" {
		*limit = 20
	}
	if *visibility < time.Second || *visibility > 12*time.Hour {
		return usagef("-visibility %s: want 1s to 12h", *visibility)
	}
	var b dlqBackend
	switch *kind {
	case "aws":
		tr, err := af.transport(ctx, false)
		if err != nil {
			return err
		}
		b = &awsDLQ{tr: tr, sqs: tr.SQS(), visibility: *visibility}
	case "postgres":
		if pf.dsn == "" {
			return usagef("-transport postgres needs -db postgres://...")
		}
		if b, err = newPGDLQ(ctx, pf); err != nil {
			return err
		}
	case "":
		return usagef("-transport is required: aws or postgres")
	default:
		return usagef("-transport %q: want aws or postgres", *kind)
	}
	defer b.close()

	switch sub {
	case "list":
		qs, err := b.list(ctx, *prefix)
		if err != nil {
			return err
		}
		if c.json {
			if qs == nil {
				qs = []deadQueue{}
			}
			return c.printJSON(qs)
		}
		if len(qs) == 0 {
			fmt.Fprintln(c.stdout, "no dead-letter or poison queues")
			return nil
		}
		rows := make([][]string, 0, len(qs))
		for _, q := range qs {
			rows = append(rows, []string{q.Queue, q.Kind, strings.Join(q.Sources, ","),
				strconv.FormatInt(q.Messages, 10), strconv.FormatInt(q.InFlight, 10)})
		}
		c.table([]string{"QUEUE", "KIND", "SOURCES", "MESSAGES", "IN FLIGHT"}, rows)
		return nil
	case "show":
		msgs, err := b.peek(ctx, *queue, *limit)
		if err != nil {
			return err
		}
		if c.json {
			if msgs == nil {
				msgs = []deadMessage{}
			}
			return c.printJSON(msgs)
		}
		if len(msgs) == 0 {
			fmt.Fprintf(c.stdout, "%s is empty\n", *queue)
			return nil
		}
		for i, m := range msgs {
			if i > 0 {
				fmt.Fprintln(c.stdout)
			}
			c.printDead(m)
		}
		return nil
	}
	res, err := b.redrive(ctx, *queue, redriveOptions{limit: *limit, ids: ids, to: *to})
	if err != nil {
		return err
	}
	if c.json {
		if res.Moved == nil {
			res.Moved = []movedMessage{}
		}
		if res.Failed == nil {
			res.Failed = []failedMove{}
		}
		if err := c.printJSON(res); err != nil {
			return err
		}
	} else {
		if len(res.Moved) > 0 {
			rows := make([][]string, 0, len(res.Moved))
			for _, m := range res.Moved {
				rows = append(rows, []string{m.ID, m.EventID, m.Type, m.To})
			}
			c.table([]string{"ID", "EVENT ID", "TYPE", "SENT TO"}, rows)
		}
		for _, f := range res.Failed {
			fmt.Fprintf(c.stdout, "not moved: %s (event %s): %s\n", f.ID, f.EventID, f.Error)
		}
		fmt.Fprintf(c.stdout, "redrove %d message(s) from %s\n", len(res.Moved), *queue)
	}
	if len(res.Failed) > 0 {
		return fmt.Errorf("%d message(s) could not be redriven; they stay in %s", len(res.Failed), *queue)
	}
	if len(res.Moved) == 0 && len(ids) > 0 {
		return fmt.Errorf("no message of %s matched the ids given", *queue)
	}
	return nil
}

func (c *cli) printDead(m deadMessage) {
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(c.stdout, "  %-15s %s\n", k+":", v)
		}
	}
	fmt.Fprintf(c.stdout, "message %s\n", m.ID)
	line("event", m.EventID)
	line("type", m.Type)
	line("time", m.Time)
	line("reason", m.Reason)
	line("error", m.Error)
	line("handler", m.Handler)
	line("attempts", m.Attempts)
	line("deliveries", m.Deliveries)
	line("first failure", m.FirstFailure)
	line("last failure", m.LastFailure)
	line("received", m.ReceiveCount)
	line("redrive to", m.RedriveTo)
	line("correlation", m.Metadata[eda.MetadataCorrelationID])
	if m.ClaimCheck != "" {
		line("payload", "(claim-checked, key "+m.ClaimCheck+")")
	} else {
		line("payload", excerpt(m.Payload, 200))
	}
}
