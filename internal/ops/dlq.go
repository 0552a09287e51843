package ops

import (
	"context"
	"errors"
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
	KindDeadLetter = "dead-letter" // another queue's redrive policy moves messages here
	KindPoison     = "poison"      // the poison middleware publishes here (by name)
	KindNamed      = "named"       // named like a dead-letter queue ("-dlq")
)

// DeadQueue is one dead-letter or poison queue.
type DeadQueue struct {
	Queue    string   `json:"queue"`
	Kind     string   `json:"kind"`
	Sources  []string `json:"sources,omitempty"`
	Messages int64    `json:"messages"` // waiting
	InFlight int64    `json:"inFlight"` // received by someone, not yet settled
}

// DeadMessage is one message in a dead-letter queue.
type DeadMessage struct {
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

// NewDeadMessage describes a message from its metadata; dlqSource is the
// queue the broker moved it from, if known, and brokerDeliveries how many
// times that queue delivered it before (its max receive count; 0 unknown).
func NewDeadMessage(id string, md message.Metadata, payload []byte, dlqSource string, brokerDeliveries int) DeadMessage {
	m := DeadMessage{
		ID: id, EventID: md.Get(eda.MetadataID), Type: md.Get(eda.MetadataType), Time: md.Get(eda.MetadataTime),
		Reason: md.Get(middleware.MetadataPoisonReason), Error: md.Get(middleware.MetadataPoisonError),
		Handler: md.Get(middleware.MetadataPoisonHandler), Attempts: md.Get(middleware.MetadataPoisonAttempts),
		Deliveries:   md.Get(middleware.MetadataPoisonDeliveries),
		FirstFailure: md.Get(middleware.MetadataPoisonFirstFailure), LastFailure: md.Get(middleware.MetadataPoisonLastFailure),
		Metadata: md, Payload: string(payload),
	}
	if m.Reason == "" && dlqSource != "" {
		m.Reason = ReasonMaxReceive // the broker's redrive policy: no reason recorded
	}
	m.TotalDeliveries, m.Redrives = history(md, m.brokerMoved(dlqSource), brokerDeliveries)
	if t, err := redriveTarget(dlqSource, md, ""); err == nil {
		m.RedriveTo = t.String()
	}
	return m
}

// brokerMoved tells whether the broker's redrive policy, not the poison
// middleware, put the message in the dead-letter queue (in this round).
func (m DeadMessage) brokerMoved(dlqSource string) bool {
	return dlqSource != "" && m.Metadata[middleware.MetadataPoisonReason] == ""
}

// failedAt is the time -since and -until compare: the last failure the
// poison middleware recorded, else when the broker says the message entered
// the dead-letter queue; zero if neither is known.
func (m DeadMessage) failedAt() time.Time {
	for _, s := range []string{m.LastFailure, m.Enqueued} {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

// ReasonMaxReceive is the reason shown for a message a broker's redrive
// policy moved (SQS maxReceiveCount, transport.Queue.MaxReceiveCount).
const ReasonMaxReceive = "max_receive_count"

// Reasons are the values -reason accepts.
var Reasons = []string{string(middleware.ReasonPermanent), string(middleware.ReasonRetriesExhausted), ReasonMaxReceive}

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
func redriveMetadata(m DeadMessage, dlqSource string, brokerDeliveries int) message.Metadata {
	out := make(message.Metadata, len(m.Metadata)+3)
	for k, v := range m.Metadata {
		if !IsRedriveKey(k) {
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

// RedriveOptions select what Redrive (or Discard) moves and where.
type RedriveOptions struct {
	Limit        int             // at most this many moved; 0: all
	IDs          map[string]bool // event ids or message ids; empty: all
	Types        map[string]bool // event types; empty: all
	Reasons      map[string]bool // reasons; empty: all
	Since, Until time.Time       // the last failure in [Since, Until]; zero: unbounded
	To           string          // send every message to this queue instead of its source
	DryRun       bool            // only list what would move
	Started      time.Time       // messages that entered the queue later are left alone; zero: now
}

// Selects tells whether m is one the operator asked for.
func (o RedriveOptions) Selects(m DeadMessage) bool {
	if len(o.IDs) > 0 && !o.IDs[m.ID] && (m.EventID == "" || !o.IDs[m.EventID]) {
		return false
	}
	if len(o.Types) > 0 && !o.Types[m.Type] {
		return false
	}
	if len(o.Reasons) > 0 && !o.Reasons[m.Reason] {
		return false
	}
	if !o.Since.IsZero() || !o.Until.IsZero() {
		at := m.failedAt()
		if at.IsZero() || (!o.Since.IsZero() && at.Before(o.Since)) || (!o.Until.IsZero() && at.After(o.Until)) {
			return false
		}
	}
	return true
}

type MovedMessage struct {
	ID       string `json:"id"`
	EventID  string `json:"eventId"`
	Type     string `json:"type"`
	Reason   string `json:"reason"`
	To       string `json:"to"`
	Redrives int    `json:"redrives"` // after this redrive
}

type FailedMove struct {
	ID      string `json:"id"`
	EventID string `json:"eventId"`
	Error   string `json:"error"`
}

type RedriveResult struct {
	Queue  string         `json:"queue"`
	DryRun bool           `json:"dryRun"`
	Moved  []MovedMessage `json:"moved"` // with -dry-run: what would move
	// ByTarget counts the moved messages per queue (or topic) they went back to.
	ByTarget map[string]int `json:"byTarget"`
	Failed   []FailedMove   `json:"failed"`
	// Later counts the messages left alone because they entered the queue
	// after the redrive started (a consumer that poisons them again).
	Later int `json:"later"`
}

// Count fills ByTarget from Moved.
func (r *RedriveResult) Count() {
	r.ByTarget = map[string]int{}
	for _, m := range r.Moved {
		r.ByTarget[m.To]++
	}
}

// DLQ is a transport's dead-letter and poison queues, read and acted on
// without a consumer: AWSDLQ (SQS) and PostgresDLQ (the Postgres
// transport's tables). edactl dlq and the console both call it.
type DLQ interface {
	// List returns the dead-letter and poison queues whose name starts
	// with prefix, with their depth.
	List(ctx context.Context, prefix string) ([]DeadQueue, error)
	// Peek returns messages of queue without consuming them (see
	// PeekOptions; on SQS a peek receives and releases them at once).
	Peek(ctx context.Context, queue string, o PeekOptions) (Page, error)
	// Redrive sends what o selects back to its source queue (or o.To) and
	// deletes it from queue.
	Redrive(ctx context.Context, queue string, o RedriveOptions) (RedriveResult, error)
	// Discard deletes what o selects from queue (o.To is ignored).
	Discard(ctx context.Context, queue string, o RedriveOptions) (RedriveResult, error)
	// Topology returns the queues and topics whose name starts with
	// prefix, with each queue's depth.
	Topology(ctx context.Context, prefix string) (Topology, error)
	// Close releases what the DLQ holds (not a pool it was given).
	Close()
}

// PeekOptions page through a dead-letter queue.
type PeekOptions struct {
	// Limit is the most messages returned. Default 20.
	Limit int
	// After: only messages after this message id (the Postgres
	// transport's row id; a page's Next). SQS has no order to page in:
	// there it is refused with ErrNoPaging.
	After string
	// Groups asks for the count of every message in the queue by reason
	// (Page.Groups). The Postgres DLQ reads every row's metadata for it;
	// SQS counts only the messages of this page.
	Groups bool
}

// ErrNoPaging: the broker cannot page through a queue (SQS receives in
// no order).
var ErrNoPaging = errors.New("this broker cannot page through a queue")

// Page is one page of a dead-letter queue.
type Page struct {
	Messages []DeadMessage
	// Next is the After of the next page; "" on the last page (or when the
	// broker cannot page).
	Next string
	// Groups counts the queue's messages by reason (with PeekOptions.Groups):
	// over the whole queue when GroupsComplete, else over Messages only.
	Groups         []Group
	GroupsComplete bool
}

// Group counts the messages of one reason.
type Group struct {
	Reason string
	Count  int
	// Types are the event types of the group with their counts.
	Types map[string]int
}

// Discarded is the To of a message Discard deleted.
const Discarded = "discarded"

// ErrBadID: an id that is not of the broker's form.
var ErrBadID = errors.New("malformed message id")

// groupCounter counts messages by reason and type.
type groupCounter struct{ by map[string]*Group }

func newGroupCounter() *groupCounter { return &groupCounter{by: map[string]*Group{}} }

func (c *groupCounter) add(reason, typ string) {
	if reason == "" {
		reason = "unknown"
	}
	g, ok := c.by[reason]
	if !ok {
		g = &Group{Reason: reason, Types: map[string]int{}}
		c.by[reason] = g
	}
	g.Count++
	g.Types[typ]++
}

// groups returns the groups, largest first.
func (c *groupCounter) groups() []Group {
	out := make([]Group, 0, len(c.by))
	for _, g := range c.by {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b Group) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	return out
}

// ParseWhen reads a -since or -until value: an RFC 3339 time, or a
// duration before now.
func ParseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("want an RFC 3339 time (2024-05-01T10:00:00Z) or a duration ago (90m), not %q", s)
	}
	return now.Add(-d), nil
}
