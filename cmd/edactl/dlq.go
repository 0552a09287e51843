package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
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
	ID              string            `json:"id"` // SQS message id, or the Postgres row id
	EventID         string            `json:"eventId"`
	Type            string            `json:"type"`
	Time            string            `json:"time,omitempty"`
	Reason          string            `json:"reason"`
	Error           string            `json:"error,omitempty"`
	Handler         string            `json:"handler,omitempty"`
	Attempts        string            `json:"attempts,omitempty"`
	Deliveries      string            `json:"deliveries,omitempty"`      // of the last round
	TotalDeliveries int               `json:"totalDeliveries,omitempty"` // over every round, redrives included
	Redrives        int               `json:"redrives"`
	FirstFailure    string            `json:"firstFailure,omitempty"` // of the first round
	LastFailure     string            `json:"lastFailure,omitempty"`
	Enqueued        string            `json:"enqueued,omitempty"`  // when the broker says it entered this queue
	RedriveTo       string            `json:"redriveTo,omitempty"` // where redrive would send it
	ReceiveCount    string            `json:"receiveCount,omitempty"`
	ClaimCheck      string            `json:"claimCheck,omitempty"`
	Metadata        map[string]string `json:"metadata"`
	Payload         string            `json:"payload"`
}

// newDeadMessage describes a message from its metadata; dlqSource is the
// queue the broker moved it from, if known, and brokerDeliveries how many
// times that queue delivered it before (its max receive count; 0 unknown).
func newDeadMessage(id string, md message.Metadata, payload []byte, dlqSource string, brokerDeliveries int) deadMessage {
	m := deadMessage{
		ID: id, EventID: md.Get(eda.MetadataID), Type: md.Get(eda.MetadataType), Time: md.Get(eda.MetadataTime),
		Reason: md.Get(middleware.MetadataPoisonReason), Error: md.Get(middleware.MetadataPoisonError),
		Handler: md.Get(middleware.MetadataPoisonHandler), Attempts: md.Get(middleware.MetadataPoisonAttempts),
		Deliveries:   md.Get(middleware.MetadataPoisonDeliveries),
		FirstFailure: md.Get(middleware.MetadataPoisonFirstFailure), LastFailure: md.Get(middleware.MetadataPoisonLastFailure),
		Metadata: md, Payload: string(payload),
	}
	if m.Reason == "" && dlqSource != "" {
		m.Reason = reasonMaxReceive // the broker's redrive policy: no reason recorded
	}
	m.TotalDeliveries, m.Redrives = history(md, m.brokerMoved(dlqSource), brokerDeliveries)
	if t, err := redriveTarget(dlqSource, md, ""); err == nil {
		m.RedriveTo = t.String()
	}
	return m
}

// brokerMoved tells whether the broker's redrive policy, not the poison
// middleware, put the message in the dead-letter queue (in this round).
func (m deadMessage) brokerMoved(dlqSource string) bool {
	return dlqSource != "" && m.Metadata[middleware.MetadataPoisonReason] == ""
}

// failedAt is the time -since and -until compare: the last failure the
// poison middleware recorded, else when the broker says the message entered
// the dead-letter queue; zero if neither is known.
func (m deadMessage) failedAt() time.Time {
	for _, s := range []string{m.LastFailure, m.Enqueued} {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

// reasonMaxReceive is the reason shown for a message a broker's redrive
// policy moved (SQS maxReceiveCount, transport.Queue.MaxReceiveCount).
const reasonMaxReceive = "max_receive_count"

// reasons are the values -reason accepts.
var reasons = []string{string(middleware.ReasonPermanent), string(middleware.ReasonRetriesExhausted), reasonMaxReceive}

// history returns a message's poison history: its deliveries over every
// round (those the poison middleware recorded, plus brokerDeliveries when
// the broker moved it in this round) and how many times it was redriven.
func history(md message.Metadata, brokerMoved bool, brokerDeliveries int) (total, redrives int) {
	for _, k := range []string{middleware.MetadataPoisonTotalDeliveries, middleware.MetadataPoisonDeliveries} {
		if n, err := strconv.Atoi(md.Get(k)); err == nil && n > 0 {
			total = n
			break
		}
	}
	if brokerMoved {
		total += brokerDeliveries
	}
	redrives, _ = strconv.Atoi(md.Get(middleware.MetadataPoisonRedrives))
	return total, max(redrives, 0)
}

// redriveMetadata returns md as the redriven message carries it: without
// the last round's poison keys and the transport's bookkeeping, but with
// the history middleware.Poison carries into the next round: the first
// failure, the total deliveries so far, and the redrive count plus one.
func redriveMetadata(m deadMessage, dlqSource string, brokerDeliveries int) message.Metadata {
	out := make(message.Metadata, len(m.Metadata)+3)
	for k, v := range m.Metadata {
		if !isRedriveKey(k) {
			out[k] = v
		}
	}
	total, redrives := history(m.Metadata, m.brokerMoved(dlqSource), brokerDeliveries)
	if total > 0 {
		out[middleware.MetadataPoisonTotalDeliveries] = strconv.Itoa(total)
	}
	out[middleware.MetadataPoisonRedrives] = strconv.Itoa(redrives + 1)
	return out
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

// groupID returns the FIFO group of a message.
func groupID(stored string, md message.Metadata) string {
	if stored != "" {
		return stored
	}
	return md.Get(transport.MetadataGroupID)
}

// redriveOptions select what redrive moves and where.
type redriveOptions struct {
	limit        int             // at most this many moved; 0: all
	ids          map[string]bool // event ids or message ids; empty: all
	types        map[string]bool // event types; empty: all
	reasons      map[string]bool // reasons; empty: all
	since, until time.Time       // the last failure in [since, until]; zero: unbounded
	to           string          // send every message to this queue instead of its source
	dryRun       bool            // only list what would move
	started      time.Time       // messages that entered the queue later are left alone
}

// selects tells whether m is one the operator asked for.
func (o redriveOptions) selects(m deadMessage) bool {
	if len(o.ids) > 0 && !o.ids[m.ID] && (m.EventID == "" || !o.ids[m.EventID]) {
		return false
	}
	if len(o.types) > 0 && !o.types[m.Type] {
		return false
	}
	if len(o.reasons) > 0 && !o.reasons[m.Reason] {
		return false
	}
	if !o.since.IsZero() || !o.until.IsZero() {
		at := m.failedAt()
		if at.IsZero() || (!o.since.IsZero() && at.Before(o.since)) || (!o.until.IsZero() && at.After(o.until)) {
			return false
		}
	}
	return true
}

type movedMessage struct {
	ID       string `json:"id"`
	EventID  string `json:"eventId"`
	Type     string `json:"type"`
	Reason   string `json:"reason"`
	To       string `json:"to"`
	Redrives int    `json:"redrives"` // after this redrive
}

type failedMove struct {
	ID      string `json:"id"`
	EventID string `json:"eventId"`
	Error   string `json:"error"`
}

type redriveResult struct {
	Queue  string         `json:"queue"`
	DryRun bool           `json:"dryRun"`
	Moved  []movedMessage `json:"moved"` // with -dry-run: what would move
	// ByTarget counts the moved messages per queue (or topic) they went back to.
	ByTarget map[string]int `json:"byTarget"`
	Failed   []failedMove   `json:"failed"`
	// Later counts the messages left alone because they entered the queue
	// after the redrive started (a consumer that poisons them again).
	Later int `json:"later"`
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
		usage = "-transport aws|postgres -queue name [event-id...] [-type t] [-reason r] [-since t] [-until t] [-to queue] [-n count] [-dry-run]"
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
	visibility := fs.Duration("visibility", 30*time.Second, "aws: how long show and redrive hold the messages they received (they release them at once when done)")
	dryRun := fs.Bool("dry-run", false, "redrive: list what would move, move nothing")
	o := redriveOptions{ids: map[string]bool{}, types: map[string]bool{}, reasons: map[string]bool{}}
	fs.Func("id", "redrive: only this event id or message id (repeatable; ids may also be given as arguments)", func(s string) error {
		o.ids[s] = true
		return nil
	})
	fs.Func("type", "redrive: only events of this type (repeatable)", func(s string) error {
		if s == "" {
			return errors.New("empty type")
		}
		o.types[s] = true
		return nil
	})
	fs.Func("reason", "redrive: only messages poisoned for this reason: "+strings.Join(reasons, ", ")+" (repeatable)", func(s string) error {
		if !slices.Contains(reasons, s) {
			return fmt.Errorf("want one of %s", strings.Join(reasons, ", "))
		}
		o.reasons[s] = true
		return nil
	})
	now := time.Now()
	fs.Func("since", "redrive: only messages whose last failure is at or after this: RFC 3339, or a duration ago (1h)", func(s string) (err error) {
		o.since, err = parseWhen(s, now)
		return err
	})
	fs.Func("until", "redrive: only messages whose last failure is at or before this: RFC 3339, or a duration ago (10m)", func(s string) (err error) {
		o.until, err = parseWhen(s, now)
		return err
	})
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if sub == "redrive" {
		for _, p := range pos {
			o.ids[p] = true
		}
	} else {
		if len(pos) > 0 {
			return usagef("unexpected arguments %q", pos)
		}
		var set []string
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "id", "type", "reason", "since", "until", "to", "dry-run":
				set = append(set, "-"+f.Name)
			}
		})
		if len(set) > 0 {
			return usagef("%s: only dlq redrive takes %s", sub, strings.Join(set, ", "))
		}
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
	if !o.since.IsZero() && !o.until.IsZero() && o.since.After(o.until) {
		return usagef("-since %s is after -until %s", o.since.Format(time.RFC3339), o.until.Format(time.RFC3339))
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
	o.limit, o.to, o.dryRun, o.started = *limit, *to, *dryRun, time.Now()
	res, err := b.redrive(ctx, *queue, o)
	if err != nil {
		return err
	}
	res.Queue, res.DryRun = *queue, o.dryRun
	res.ByTarget = map[string]int{}
	for _, m := range res.Moved {
		res.ByTarget[m.To]++
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
		c.printRedrive(res)
	}
	if len(res.Failed) > 0 {
		return fmt.Errorf("%d message(s) could not be redriven; they stay in %s", len(res.Failed), *queue)
	}
	return nil
}

// parseWhen reads -since and -until: an RFC 3339 time, or a duration
// before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("want an RFC 3339 time (2024-05-01T10:00:00Z) or a duration ago (90m), not %q", s)
	}
	return now.Add(-d), nil
}

func (c *cli) printRedrive(res redriveResult) {
	verb, head := "moved", "SENT TO"
	if res.DryRun {
		verb, head = "would move", "WOULD SEND TO"
	}
	if len(res.Moved) > 0 {
		rows := make([][]string, 0, len(res.Moved))
		for _, m := range res.Moved {
			rows = append(rows, []string{m.ID, m.EventID, m.Type, m.Reason, m.To, strconv.Itoa(m.Redrives)})
		}
		c.table([]string{"ID", "EVENT ID", "TYPE", "REASON", head, "REDRIVES"}, rows)
	}
	for _, f := range res.Failed {
		fmt.Fprintf(c.stdout, "not moved: %s (event %s): %s\n", f.ID, f.EventID, f.Error)
	}
	var per []string
	for _, t := range sortedKeys(res.ByTarget) {
		per = append(per, fmt.Sprintf("%d to %s", res.ByTarget[t], t))
	}
	fmt.Fprintf(c.stdout, "%d %s from %s", len(res.Moved), verb, res.Queue)
	if len(per) > 0 {
		fmt.Fprintf(c.stdout, ": %s", strings.Join(per, ", "))
	} else {
		fmt.Fprint(c.stdout, ": no message matched")
	}
	if res.Later > 0 {
		fmt.Fprintf(c.stdout, " (%d arrived after the redrive started: left alone)", res.Later)
	}
	fmt.Fprintln(c.stdout)
}

func (c *cli) printDead(m deadMessage) {
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(c.stdout, "  %-17s %s\n", k+":", v)
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
	if m.TotalDeliveries > 0 {
		line("total deliveries", strconv.Itoa(m.TotalDeliveries))
	}
	line("redrives", strconv.Itoa(m.Redrives))
	line("first failure", m.FirstFailure)
	line("last failure", m.LastFailure)
	line("enqueued", m.Enqueued)
	line("received", m.ReceiveCount)
	line("redrive to", m.RedriveTo)
	line("correlation", m.Metadata[eda.MetadataCorrelationID])
	if m.ClaimCheck != "" {
		line("payload", "(claim-checked, key "+m.ClaimCheck+")")
	} else {
		line("payload", excerpt(m.Payload, 200))
	}
}
