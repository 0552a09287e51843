package eda

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
)

// Event is implemented by every event type. EventName is the stable name
// written into MetadataType (CloudEvents "type"); it must not change when the
// Go type is renamed or moved. It is called on the zero value.
type Event interface {
	EventName() string
}

// Versioned events declare their schema version (default 1). A handler
// accepts messages of its version or older and rejects newer ones with
// ErrSchemaVersion.
type Versioned interface {
	SchemaVersion() int
}

// Ordered events declare an ordering key: messages with one key are delivered
// in order on FIFO queues (the SQS message group). Written into
// MetadataOrderingKey.
type Ordered interface {
	OrderingKey() string
}

// Config configures an App. The zero value of every field but Transport is a
// usable default.
type Config struct {
	// Transport carries the messages. Required.
	Transport transport.Transport
	// Publisher, when set, is used for Publish instead of Transport (for
	// example a decorated or outbox publisher). Default: Transport.
	Publisher message.Publisher
	// Source is the CloudEvents source of published events, usually the
	// service name. Default DefaultSource.
	Source string
	// Codec encodes payloads. Default JSON.
	Codec Codec
	// Logger receives the router's logs. Nil discards them.
	Logger *slog.Logger
	// Middleware wraps every handler, first element outermost.
	Middleware []message.HandlerMiddleware
	// CloseTimeout bounds how long Run waits for in-flight handlers after its
	// context is cancelled. Default 30s.
	CloseTimeout time.Duration
}

// DefaultSource is the CloudEvents source when Config.Source is empty.
const DefaultSource = "eda"

// DefaultCloseTimeout is Config.CloseTimeout's default.
const DefaultCloseTimeout = 30 * time.Second

func (c *Config) setDefaults() {
	if c.Publisher == nil {
		c.Publisher = c.Transport
	}
	if c.Source == "" {
		c.Source = DefaultSource
	}
	if c.Codec == nil {
		c.Codec = JSON{}
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
}

// Validate reports every problem with the config, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Transport == nil {
		errs = append(errs, fmt.Errorf("%w: Transport is nil", ErrInvalidConfig))
	}
	if c.CloseTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: negative CloseTimeout %s", ErrInvalidConfig, c.CloseTimeout))
	}
	for i, m := range c.Middleware {
		if m == nil {
			errs = append(errs, fmt.Errorf("%w: Middleware[%d] is nil", ErrInvalidConfig, i))
		}
	}
	return errors.Join(errs...)
}

// QueueConfig declares a queue handlers consume from. The queue's topics are
// those of the events its handlers accept, plus Topics.
type QueueConfig struct {
	transport.Queue
	// Concurrency is the number of competing consumers this process runs
	// on the queue. Default 1.
	Concurrency int
}

// App registers events, handlers and queues, publishes events and runs the
// handlers. Register, Handle and DeclareQueue must be called before Run.
type App struct {
	cfg Config

	mu      sync.RWMutex
	byType  map[reflect.Type]*eventType
	byName  map[string]*eventType
	queues  map[string]*queueSpec
	order   []string // queue declaration order, for stable startup
	started bool
	running chan struct{}

	// For health.go.
	done     chan struct{}               // closed when Run returns
	handlers map[string]*message.Handler // the router's by name, once Run has added them; guarded by mu

	// one is a spare of the one-element slice a one-event Publish passes
	// to the publisher, which would otherwise be allocated on every call
	// (it escapes through the interface); concurrent publishes that find
	// it taken allocate their own. A publisher does not keep the slice it
	// is given after Publish returns.
	one atomic.Pointer[[1]*message.Message]

	ids eventIDs // event ids (NewMessage)
}

type eventType struct {
	name       string
	version    int
	versionStr string
	topic      string
}

type queueSpec struct {
	cfg      QueueConfig
	declared bool                                                     // by DeclareQueue, not implicitly by Handle
	handlers map[string]func(context.Context, *message.Message) error // by event name; each puts msg in its ctx
}

// New validates cfg, fills defaults and returns an App.
func New(cfg Config) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &App{
		cfg:     cfg,
		byType:  map[reflect.Type]*eventType{},
		byName:  map[string]*eventType{},
		queues:  map[string]*queueSpec{},
		running: make(chan struct{}),
		done:    make(chan struct{}),
	}, nil
}

// Register maps event type E to the topic it is published on. Each event name
// registers once.
func Register[E Event](a *App, topic string) error {
	var zero E
	name, err := eventName(zero)
	if err != nil {
		return err
	}
	if strings.TrimSpace(topic) == "" {
		return fmt.Errorf("%w: event %q: topic is empty", ErrInvalidConfig, name)
	}
	version := 1
	if v, ok := any(zero).(Versioned); ok {
		version = v.SchemaVersion()
		if version < 1 {
			return fmt.Errorf("%w: event %q: schema version %d, want >= 1", ErrInvalidConfig, name, version)
		}
	}
	typ := reflect.TypeFor[E]()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return fmt.Errorf("%w: Register %q after Run", ErrInvalidConfig, name)
	}
	if prev, ok := a.byType[typ]; ok {
		return fmt.Errorf("%w: type %s is already registered as %q", ErrDuplicateEvent, typ, prev.name)
	}
	if _, ok := a.byName[name]; ok {
		return fmt.Errorf("%w: event name %q is already registered by another type", ErrDuplicateEvent, name)
	}
	et := &eventType{name: name, version: version, versionStr: strconv.Itoa(version), topic: topic}
	a.byType[typ] = et
	a.byName[name] = et
	return nil
}

func eventName(e Event) (name string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %T.EventName panics on the zero value: %v", ErrInvalidConfig, e, r)
		}
	}()
	if any(e) == nil {
		return "", fmt.Errorf("%w: event type must be a concrete type, not an interface", ErrInvalidConfig)
	}
	name = e.EventName()
	if strings.TrimSpace(name) == "" {
		return "", fmt.Errorf("%w: %T.EventName is empty", ErrInvalidConfig, e)
	}
	return name, nil
}

// DeclareQueue declares a queue with its settings before handlers are bound
// to it. A queue that Handle meets undeclared gets the defaults.
func (a *App) DeclareQueue(cfg QueueConfig) error {
	if cfg.Concurrency < 0 {
		return fmt.Errorf("%w: queue %q: negative concurrency %d", ErrInvalidConfig, cfg.Name, cfg.Concurrency)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
	}
	if err := cfg.Queue.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return fmt.Errorf("%w: DeclareQueue %q after Run", ErrInvalidConfig, cfg.Name)
	}
	if q, ok := a.queues[cfg.Name]; ok {
		if q.declared {
			return fmt.Errorf("%w: queue %q declared twice", ErrInvalidConfig, cfg.Name)
		}
		q.cfg, q.declared = cfg, true
		return nil
	}
	a.queues[cfg.Name] = &queueSpec{cfg: cfg, declared: true, handlers: map[string]func(context.Context, *message.Message) error{}}
	a.order = append(a.order, cfg.Name)
	return nil
}

// Handle binds fn to queue for events of type E, which must be registered.
// One queue can carry several event types, each with one handler; the
// queue's poller dispatches by event name.
//
// A message whose schema version is newer than E's (or malformed), or whose
// payload does not decode into E, fails with a permanent *MessageError
// (ErrSchemaVersion, ErrDecode) without calling fn. A message without
// MetadataSchemaVersion, as a producer not written with eda sends it, is
// schema version 1.
func Handle[E Event](a *App, queue string, fn func(context.Context, E) error) error {
	if fn == nil {
		return fmt.Errorf("%w: queue %q: nil handler", ErrInvalidConfig, queue)
	}
	if strings.TrimSpace(queue) == "" {
		return fmt.Errorf("%w: empty queue name", ErrInvalidConfig)
	}
	typ := reflect.TypeFor[E]()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return fmt.Errorf("%w: Handle on queue %q after Run", ErrInvalidConfig, queue)
	}
	et, ok := a.byType[typ]
	if !ok {
		return fmt.Errorf("%w: %s (call eda.Register before eda.Handle)", ErrUnregisteredEvent, typ)
	}
	q, ok := a.queues[queue]
	if !ok {
		q = &queueSpec{
			cfg:      QueueConfig{Queue: transport.Queue{Name: queue}, Concurrency: 1},
			handlers: map[string]func(context.Context, *message.Message) error{},
		}
		a.queues[queue] = q
		a.order = append(a.order, queue)
	}
	if _, dup := q.handlers[et.name]; dup {
		return fmt.Errorf("%w: queue %q already has a handler for %q", ErrInvalidConfig, queue, et.name)
	}
	codec := a.cfg.Codec
	q.handlers[et.name] = func(ctx context.Context, msg *message.Message) error {
		// A message without a schema version (from a producer not written
		// with eda) is version 1; a malformed one is refused.
		if v := msg.Metadata.Get(MetadataSchemaVersion); v != et.versionStr && v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > et.version {
				return &MessageError{EventID: msg.Metadata.Get(MetadataID), EventType: et.name, Queue: queue,
					Err: fmt.Errorf("%w: got %q, handler accepts 1..%d", ErrSchemaVersion, v, et.version)}
			}
		}
		if ct := msg.Metadata.Get(MetadataContentType); ct != "" && ct != codec.ContentType() {
			return &MessageError{EventID: msg.Metadata.Get(MetadataID), EventType: et.name, Queue: queue,
				Err: fmt.Errorf("%w: content type %q, codec reads %q", ErrDecode, ct, codec.ContentType())}
		}
		// One allocation holds the decoded event and the handler's context.
		box := &struct {
			msgContext
			e E
		}{msgContext: msgContext{Context: ctx, msg: msg}}
		if err := codec.Unmarshal(msg.Payload, &box.e); err != nil {
			return &MessageError{EventID: msg.Metadata.Get(MetadataID), EventType: et.name, Queue: queue,
				Err: fmt.Errorf("%w: %w", ErrDecode, err)}
		}
		return fn(&box.msgContext, box.e)
	}
	return nil
}

// NewMessage encodes e into a message with its envelope and returns the
// topic it is published on. Correlation and causation ids come from ctx when
// it is a handler's context. Outboxes and custom publishers use it; Publish
// calls it. For a Delayed event (At, After) it encodes the wrapped event and
// sets transport.MetadataDeliverAt; it does not check that a publisher can
// honour the delay (Publish does).
func (a *App) NewMessage(ctx context.Context, e Event) (topic string, msg *message.Message, err error) {
	if e == nil {
		return "", nil, fmt.Errorf("%w: nil event", ErrInvalidConfig)
	}
	var deliverAt time.Time
	switch e.(type) {
	case Delayed, *Delayed:
		if e, deliverAt, err = unwrapDelayed(e, time.Now()); err != nil {
			return "", nil, err
		}
	}
	a.mu.RLock()
	et, ok := a.byType[reflect.TypeOf(e)]
	a.mu.RUnlock()
	if !ok {
		return "", nil, fmt.Errorf("%w: %T (call eda.Register first)", ErrUnregisteredEvent, e)
	}
	payload, err := a.cfg.Codec.Marshal(e)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s: %w", ErrEncode, et.name, err)
	}
	at := time.Now()
	id := a.ids.next(at)
	// The id and the time share one allocation: both are substrings of text.
	var buf [36 + len(time.RFC3339Nano)]byte
	b := hex.AppendEncode(buf[:0], id[:4])
	b = append(b, '-')
	b = hex.AppendEncode(b, id[4:6])
	b = append(b, '-')
	b = hex.AppendEncode(b, id[6:8])
	b = append(b, '-')
	b = hex.AppendEncode(b, id[8:10])
	b = append(b, '-')
	b = hex.AppendEncode(b, id[10:])
	b = at.UTC().AppendFormat(b, time.RFC3339Nano)
	text := string(b)
	ids, now := text[:36], text[36:]
	msg = message.NewMessage(ids, payload)
	// The envelope goes into the map NewMessage made: up to 8 keys (an event
	// published outside a handler, without ordering key or delay) it is
	// one group of slots, allocated on the first insert; a map made here
	// with room for 11 would take 4 allocations and leave NewMessage's
	// unused.
	md := msg.Metadata
	md[MetadataSpecVersion] = SpecVersion
	md[MetadataID] = ids
	md[MetadataSource] = a.cfg.Source
	md[MetadataType] = et.name
	md[MetadataTime] = now
	md[MetadataContentType] = a.cfg.Codec.ContentType()
	md[MetadataSchemaVersion] = et.versionStr
	md[MetadataCorrelationID] = ids
	if parent, ok := MessageFromContext(ctx); ok {
		if c := parent.Metadata.Get(MetadataCorrelationID); c != "" {
			md[MetadataCorrelationID] = c
		}
		md[MetadataCausationID] = parent.Metadata.Get(MetadataID)
	}
	if o, ok := e.(Ordered); ok {
		if k := o.OrderingKey(); k != "" {
			md[MetadataOrderingKey] = k
		}
	}
	if !deliverAt.IsZero() {
		transport.SetDeliverAt(msg, deliverAt)
	}
	msg.SetContext(ctx)
	return et.topic, msg, nil
}

// Publish encodes events and publishes each to its registered topic, in
// order. Consecutive events for one topic go in one Publish call, which
// batching transports (SNS PublishBatch) send together. Nothing is published
// if an event cannot be encoded, or if a Delayed event (At, After) asks for
// a delay the publisher cannot honour (an error wrapping
// transport.ErrDelayUnsupported); on a publish error, the events of earlier
// calls were published.
func (a *App) Publish(ctx context.Context, events ...Event) error {
	if len(events) == 1 { // the common case, without the run bookkeeping
		topic, msg, err := a.NewMessage(ctx, events[0])
		if err != nil {
			return err
		}
		if _, delayed := msg.Metadata[transport.MetadataDeliverAt]; delayed {
			if err := a.checkDelay(topic, msg, time.Now()); err != nil {
				return err
			}
		}
		one := a.one.Swap(nil)
		if one == nil {
			one = new([1]*message.Message)
		}
		one[0] = msg
		err = a.publish(topic, one[:]...)
		one[0] = nil
		a.one.Store(one)
		return err
	}
	topics := make([]string, len(events))
	msgs := make([]*message.Message, len(events))
	for i, e := range events {
		var err error
		if topics[i], msgs[i], err = a.NewMessage(ctx, e); err != nil {
			return err
		}
		if _, delayed := msgs[i].Metadata[transport.MetadataDeliverAt]; delayed {
			if err := a.checkDelay(topics[i], msgs[i], time.Now()); err != nil {
				return err
			}
		}
	}
	for start := 0; start < len(msgs); {
		end := start + 1
		for end < len(msgs) && topics[end] == topics[start] {
			end++
		}
		if err := a.publish(topics[start], msgs[start:end]...); err != nil {
			return err
		}
		start = end
	}
	return nil
}

func (a *App) publish(topic string, msgs ...*message.Message) error {
	if err := a.cfg.Publisher.Publish(topic, msgs...); err != nil {
		return fmt.Errorf("eda: publish %d event(s) (%s...) to %q: %w", len(msgs), msgs[0].Metadata.Get(MetadataType), topic, err)
	}
	return nil
}

// Topic returns the topic event type E is published on.
func Topic[E Event](a *App) (string, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	et, ok := a.byType[reflect.TypeFor[E]()]
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrUnregisteredEvent, reflect.TypeFor[E]())
	}
	return et.topic, nil
}

// Topics returns the topics of the registered event types, each once,
// sorted.
func (a *App) Topics() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var out []string
	for _, et := range a.byName {
		if !slices.Contains(out, et.topic) {
			out = append(out, et.topic)
		}
	}
	slices.Sort(out)
	return out
}

// Queues returns the transport declarations of the app's queues, with the
// topics of their handlers' events, in declaration order.
func (a *App) Queues() []transport.Queue {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]transport.Queue, 0, len(a.order))
	for _, name := range a.order {
		out = append(out, a.queueDecl(a.queues[name]))
	}
	return out
}

func (a *App) queueDecl(q *queueSpec) transport.Queue {
	decl := q.cfg.Queue
	seen := map[string]bool{}
	topics := []string{}
	add := func(t string) {
		if !seen[t] {
			seen[t] = true
			topics = append(topics, t)
		}
	}
	for _, t := range decl.Topics {
		add(t)
	}
	for name := range q.handlers {
		add(a.byName[name].topic)
	}
	decl.Topics = topics
	return decl.WithDefaults()
}

// Declare declares every queue of the app on the transport. Run calls it;
// call it yourself to publish before Run without losing messages.
func (a *App) Declare(ctx context.Context) error {
	for _, q := range a.Queues() {
		if err := a.cfg.Transport.Declare(ctx, q); err != nil {
			return fmt.Errorf("eda: declare queue %q: %w", q.Name, err)
		}
	}
	return nil
}

// declareUntilReachable is Run's Declare: while the transport reports the
// broker unavailable (transport.ErrUnavailable), it declares again with a
// backoff (100 ms doubling to 5 s) until ctx ends, so a service started
// during a broker outage waits for the broker instead of exiting (and
// reports not ready meanwhile). Any other error returns at once.
func (a *App) declareUntilReachable(ctx context.Context) error {
	wait := 100 * time.Millisecond
	for {
		err := a.Declare(ctx)
		if err == nil || !errors.Is(err, transport.ErrUnavailable) {
			return err
		}
		if a.cfg.Logger != nil {
			a.cfg.Logger.WarnContext(ctx, "eda: broker unavailable while declaring the queues; trying again", "in", wait, "error", err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// Running is closed once Run has declared the queues and every handler is
// subscribed.
func (a *App) Running() <-chan struct{} { return a.running }

// Run declares the queues (waiting for a broker that is unavailable, see
// declareUntilReachable), subscribes every handler and processes messages
// until ctx is cancelled; then it stops receiving, waits up to
// Config.CloseTimeout for in-flight handlers and returns nil. Run can be
// called once.
func (a *App) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.started {
		a.mu.Unlock()
		return fmt.Errorf("%w: Run called twice", ErrInvalidConfig)
	}
	a.started = true
	a.mu.Unlock()
	defer close(a.done)

	if err := a.declareUntilReachable(ctx); err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: a.cfg.CloseTimeout}, newLoggerAdapter(a.cfg.Logger))
	if err != nil {
		return fmt.Errorf("eda: router: %w", err)
	}
	router.AddMiddleware(a.cfg.Middleware...)
	sub := keepOpen{a.cfg.Transport}
	handlers := map[string]*message.Handler{}
	for _, name := range a.order {
		q := a.queues[name]
		if len(q.handlers) == 0 {
			continue
		}
		dispatch := q.dispatch
		for i := range q.cfg.Concurrency {
			hname := name
			if q.cfg.Concurrency > 1 {
				hname = fmt.Sprintf("%s#%d", name, i+1)
			}
			handlers[hname] = router.AddConsumerHandler(hname, name, sub, dispatch)
		}
	}
	a.mu.Lock()
	a.handlers = handlers
	a.mu.Unlock()
	errc := make(chan error, 1)
	go func() { errc <- router.Run(context.WithoutCancel(ctx)) }()
	select {
	case <-router.Running():
		close(a.running)
	case err := <-errc:
		return fmt.Errorf("eda: router: %w", err)
	}
	select {
	case <-ctx.Done():
		closeErr := router.Close()
		if err := <-errc; err != nil {
			return fmt.Errorf("eda: router: %w", err)
		}
		return closeErr
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("eda: router: %w", err)
		}
		return errors.New("eda: router stopped: every subscription closed")
	}
}

func (q *queueSpec) dispatch(msg *message.Message) error {
	typ := msg.Metadata.Get(MetadataType)
	h, ok := q.handlers[typ]
	if !ok {
		return &MessageError{EventID: msg.Metadata.Get(MetadataID), EventType: typ, Queue: q.cfg.Name,
			Err: fmt.Errorf("%w: %q has no handler on this queue", ErrUnknownEvent, typ)}
	}
	return h(msg.Context(), msg)
}

// keepOpen hides the transport's Close from the router, which closes a
// handler's subscriber when it stops: the transport belongs to the caller,
// who may publish after Run returns. Subscriptions end by context.
type keepOpen struct{ transport.Transport }

func (keepOpen) Close() error { return nil }
