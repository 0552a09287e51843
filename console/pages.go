package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edaproject/eda/internal/ops"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

var funcs = template.FuncMap{
	"age": func(d time.Duration) string {
		switch {
		case d <= 0:
			return "-"
		case d < time.Second:
			return d.Round(time.Millisecond).String()
		default:
			return d.Round(time.Second).String()
		}
	},
	"pretty": pretty,
	"qs":     url.QueryEscape,
	"join":   strings.Join,
	"short": func(s string, n int) string {
		r := []rune(strings.Join(strings.Fields(s), " "))
		if len(r) <= n {
			return string(r)
		}
		return string(r[:n-1]) + "…"
	},
	"add": func(a, b int64) int64 { return a + b },
	"plural": func(n int, word string) string {
		if n == 1 {
			return "1 " + word
		}
		return strconv.Itoa(n) + " " + word + "s"
	},
}

// pretty indents a JSON payload; anything else is shown as it is.
func pretty(s string) string {
	var b bytes.Buffer
	if json.Indent(&b, []byte(s), "", "  ") == nil {
		return b.String()
	}
	return s
}

// outboxView is the outbox on the overview.
type outboxView struct {
	Enabled   bool
	Stats     outbox.Stats
	Lag       time.Duration
	LagBound  time.Duration
	LagOver   bool
	Error     string
	Attention bool
}

func (h *Handler) outboxState(ctx context.Context) outboxView {
	v := outboxView{Enabled: h.cfg.Outbox != nil, LagBound: h.cfg.MaxOutboxLag}
	if !v.Enabled {
		return v
	}
	st, err := h.cfg.Outbox.Stats(ctx)
	if err != nil {
		v.Error = err.Error()
		v.Attention = true
		return v
	}
	v.Stats, v.Lag = st, st.Lag(time.Now())
	v.LagOver = v.Lag > h.cfg.MaxOutboxLag
	v.Attention = v.LagOver || st.Failed > 0
	return v
}

// overviewData is the overview's live part.
type overviewData struct {
	Topology  ops.Topology
	Graph     graph
	Outbox    outboxView
	Attention []string
	Error     string
	Read      time.Time
	Refresh   time.Duration
	AWS       bool
}

func (h *Handler) overviewData(ctx context.Context) overviewData {
	d := overviewData{Read: time.Now(), Refresh: h.cfg.Refresh, AWS: h.broker == "aws"}
	top, err := h.dlq.Topology(ctx, h.cfg.QueuePrefix)
	if err != nil {
		d.Error = err.Error()
		h.log.Error("console: read the topology", "err", err)
	}
	d.Topology = top
	d.Graph = layout(top, h.cfg.QueuePrefix)
	for _, q := range top.Queues {
		if q.IsDead() && q.Depth.Visible+q.Depth.InFlight > 0 {
			d.Attention = append(d.Attention, fmt.Sprintf("%s holds %d dead letter(s)", q.Name, q.Depth.Visible+q.Depth.InFlight))
		}
	}
	d.Outbox = h.outboxState(ctx)
	if d.Outbox.LagOver {
		d.Attention = append(d.Attention, fmt.Sprintf("outbox lag %s is over %s", d.Outbox.Lag.Round(time.Second), d.Outbox.LagBound))
	}
	if d.Outbox.Stats.Failed > 0 {
		d.Attention = append(d.Attention, fmt.Sprintf("%d failed outbox record(s)", d.Outbox.Stats.Failed))
	}
	return d
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Data: h.overviewData(r.Context())})
}

// overviewLive is the overview's live part alone, which the page fetches
// every Refresh.
func (h *Handler) overviewLive(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusOK, "live", page{Data: h.overviewData(r.Context())})
}

// graph is the topology laid out for SVG: topics, queues, dead letters in
// three columns.
type graph struct {
	Width, Height int
	Nodes         []node
	Edges         []edge
}

type node struct {
	X, Y, W, H int
	Label      string
	Sub        string
	Class      string // topic, queue, dead, attention
	Link       string
}

type edge struct{ X1, Y1, X2, Y2 int }

func layout(top ops.Topology, prefix string) graph {
	label := func(s string) string {
		if t := strings.TrimPrefix(s, prefix); t != "" {
			return t
		}
		return s
	}
	const (
		w, h, gap = 240, 42, 14
		x1, x2    = 10, 330
		x3        = 650
	)
	var g graph
	pos := map[string]node{}
	y := 10
	for _, t := range top.Topics {
		n := node{X: x1, Y: y, W: w, H: h, Label: label(t), Sub: "topic", Class: "topic"}
		pos["t:"+t] = n
		g.Nodes = append(g.Nodes, n)
		y += h + gap
	}
	maxY := y
	y = 10
	var dead []ops.QueueInfo
	for _, q := range top.Queues {
		if q.IsDead() {
			dead = append(dead, q)
			continue
		}
		n := node{X: x2, Y: y, W: w, H: h, Label: label(q.Name), Class: "queue",
			Sub: fmt.Sprintf("%d visible · %d in flight · %d delayed", q.Depth.Visible, q.Depth.InFlight, q.Depth.Delayed)}
		pos["q:"+q.Name] = n
		g.Nodes = append(g.Nodes, n)
		y += h + gap
	}
	maxY = max(maxY, y)
	y = 10
	for _, q := range dead {
		n := node{X: x3, Y: y, W: w, H: h, Label: label(q.Name), Class: "dead", Link: "dlq?queue=" + url.QueryEscape(q.Name),
			Sub: fmt.Sprintf("%s · %d messages", q.Kind, q.Depth.Visible+q.Depth.InFlight)}
		if q.Depth.Visible+q.Depth.InFlight > 0 {
			n.Class = "dead attention"
		}
		// A poison queue is subscribed to the poison topic: draw it from
		// there, in the third column.
		pos["q:"+q.Name] = n
		g.Nodes = append(g.Nodes, n)
		y += h + gap
	}
	maxY = max(maxY, y)
	for _, q := range top.Queues {
		to, ok := pos["q:"+q.Name]
		if !ok {
			continue
		}
		for _, t := range q.Topics {
			if from, ok := pos["t:"+t]; ok {
				g.Edges = append(g.Edges, edge{from.X + from.W, from.Y + from.H/2, to.X, to.Y + to.H/2})
			}
		}
		if q.DLQ != "" {
			if d, ok := pos["q:"+q.DLQ]; ok {
				g.Edges = append(g.Edges, edge{to.X + to.W, to.Y + to.H/2, d.X, d.Y + d.H/2})
			}
		}
	}
	g.Width, g.Height = x3+w+10, maxY
	return g
}

// queueOf returns the dead-letter queue a request names, or answers 404.
func (h *Handler) queueOf(w http.ResponseWriter, r *http.Request, name string) (ops.QueueInfo, bool) {
	if name == "" {
		h.refuse(w, r, http.StatusBadRequest, "no queue given (?queue=name)")
		return ops.QueueInfo{}, false
	}
	top, err := h.dlq.Topology(r.Context(), h.cfg.QueuePrefix)
	if err != nil {
		h.fail(w, r, err)
		return ops.QueueInfo{}, false
	}
	q, ok := top.Queue(name)
	if !ok {
		h.refuse(w, r, http.StatusNotFound, fmt.Sprintf("no queue %q on this broker (with prefix %q)", name, h.cfg.QueuePrefix))
		return q, false
	}
	return q, true
}

// fail answers an error of the broker or the database.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusBadGateway
	switch {
	case errors.Is(err, transport.ErrUnknownQueue), errors.Is(err, transport.ErrUnknownTopic):
		code = http.StatusNotFound
	case errors.Is(err, ops.ErrBadID), errors.Is(err, ops.ErrNoPaging):
		code = http.StatusBadRequest
	}
	h.log.Error("console: request failed", "method", r.Method, "path", r.URL.Path, "err", err, "remote", remote(r))
	h.render(w, r, code, "error", page{Title: "Error", Error: err.Error()})
}

type dlqData struct {
	Queue    ops.QueueInfo
	Page     ops.Page
	After    string
	First    bool
	Total    int64
	PeekNote bool // SQS: a peek counts a receive
	Elapsed  time.Duration
}

func (h *Handler) deadLetters(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	q, ok := h.queueOf(w, r, r.URL.Query().Get("queue"))
	if !ok {
		return
	}
	o := ops.PeekOptions{Limit: h.cfg.PageSize, After: r.URL.Query().Get("after"), Groups: true}
	if h.broker == "aws" {
		o.Limit = h.cfg.PeekLimit
	}
	p, err := h.dlq.Peek(r.Context(), q.Name, o)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := dlqData{Queue: q, Page: p, After: o.After, First: o.After == "", Total: q.Depth.Visible + q.Depth.InFlight,
		PeekNote: h.broker == "aws"}
	d.Elapsed = time.Since(began)
	h.render(w, r, http.StatusOK, "dlq", page{Title: "Dead letters: " + q.Name, Nav: "dlq", Notice: r.URL.Query().Get("done"), Data: d})
}

// confirmData is a confirmation page: what the action would do, and a form
// that does it.
type confirmData struct {
	Action  string // "redrive" or "discard"
	Queue   string
	Scope   string
	Reason  string
	IDs     []string
	Count   int
	Targets map[string]int
	Back    string
	Path    string // where the form posts
	Verb    string
	What    string // "message", "record"
}

// deadLetterAction redrives or discards: first a confirmation (a dry run
// that counts what would move), then, with confirm=yes, the action.
func (h *Handler) deadLetterAction(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		h.refuse(w, r, http.StatusBadRequest, "malformed form: "+err.Error())
		return
	}
	f := r.PostForm
	action, scope := actionOf(f)
	if action != "redrive" && action != "discard" {
		h.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("unknown action %q: want redrive or discard", action))
		return
	}
	q, ok := h.queueOf(w, r, f.Get("queue"))
	if !ok {
		return
	}
	if !q.IsDead() {
		h.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("%s is not a dead-letter or poison queue", q.Name))
		return
	}
	o := ops.RedriveOptions{Started: time.Now()}
	ids := f["id"]
	switch scope {
	case "selected":
		if len(ids) == 0 {
			h.refuse(w, r, http.StatusBadRequest, "no message selected: nothing was changed")
			return
		}
		o.IDs = map[string]bool{}
		for _, id := range ids {
			if id == "" || len(id) > 200 {
				h.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("malformed message id %q: nothing was changed", id))
				return
			}
			o.IDs[id] = true
		}
	case "group":
		reason := f.Get("reason")
		if reason == "" {
			h.refuse(w, r, http.StatusBadRequest, "no reason given for the group: nothing was changed")
			return
		}
		o.Reasons = map[string]bool{reason: true}
	case "all":
	default:
		h.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("unknown scope %q: want selected, group or all", scope))
		return
	}
	act := h.dlq.Redrive
	if action == "discard" {
		act = h.dlq.Discard
	}
	back := "dlq?queue=" + url.QueryEscape(q.Name)
	if f.Get("confirm") != "yes" {
		o.DryRun = true
		res, err := act(r.Context(), q.Name, o)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if scope == "selected" {
			if missing := missingIDs(ids, res.Moved); len(missing) > 0 {
				h.refuse(w, r, http.StatusNotFound, fmt.Sprintf("not in %s (or held by a consumer now): %s: nothing was changed", q.Name, strings.Join(missing, ", ")))
				return
			}
		}
		verb := "Redrive"
		if action == "discard" {
			verb = "Discard"
		}
		h.render(w, r, http.StatusOK, "confirm", page{Title: "Confirm", Nav: "dlq", Data: confirmData{
			Action: action, Queue: q.Name, Scope: scope, Reason: f.Get("reason"), IDs: ids, Count: len(res.Moved),
			Targets: res.ByTarget, Back: back, Path: "dlq", Verb: verb, What: "message"}})
		return
	}
	res, err := act(r.Context(), q.Name, o)
	h.log.Info("console: dead letters "+action, "queue", q.Name, "scope", scope, "reason", f.Get("reason"), "selected", len(ids),
		"moved", len(res.Moved), "failed", len(res.Failed), "by_target", res.ByTarget, "err", err, "remote", remote(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	msg := fmt.Sprintf("%s: %d message(s) from %s", map[string]string{"redrive": "redriven", "discard": "discarded"}[action], len(res.Moved), q.Name)
	var per []string
	for _, t := range sortedKeys(res.ByTarget) {
		if t != ops.Discarded {
			per = append(per, fmt.Sprintf("%d to %s", res.ByTarget[t], t))
		}
	}
	if len(per) > 0 {
		msg += " (" + strings.Join(per, ", ") + ")"
	}
	if len(res.Failed) > 0 {
		msg += fmt.Sprintf("; %d could not be moved and stay in %s: %s", len(res.Failed), q.Name, res.Failed[0].Error)
	}
	if res.Later > 0 {
		msg += fmt.Sprintf("; %d arrived after the action started and were left alone", res.Later)
	}
	http.Redirect(w, r, back+"&done="+url.QueryEscape(msg), http.StatusSeeOther)
}

// actionOf reads the action and its scope: fields action and scope, or a
// button's do=action:scope.
func actionOf(f url.Values) (action, scope string) {
	if a, s, ok := strings.Cut(f.Get("do"), ":"); ok {
		return a, s
	}
	return f.Get("action"), f.Get("scope")
}

// missingIDs are the ids not among moved (by message id or event id).
func missingIDs(ids []string, moved []ops.MovedMessage) []string {
	have := map[string]bool{}
	for _, m := range moved {
		have[m.ID], have[m.EventID] = true, true
	}
	var out []string
	for _, id := range ids {
		if !have[id] {
			out = append(out, id)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

type outboxData struct {
	Outbox  outboxView
	Failed  []outbox.Record
	Shown   int
	Elapsed time.Duration
}

func (h *Handler) outboxPage(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Outbox == nil {
		h.refuse(w, r, http.StatusNotFound, "this console has no outbox configured")
		return
	}
	began := time.Now()
	d := outboxData{Outbox: h.outboxState(r.Context())}
	recs, err := h.cfg.Outbox.Failed(r.Context(), h.cfg.FailedLimit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.Failed, d.Shown = recs, len(recs)
	d.Elapsed = time.Since(began)
	h.render(w, r, http.StatusOK, "outbox", page{Title: "Outbox", Nav: "outbox", Notice: r.URL.Query().Get("done"), Data: d})
}

// outboxAction retries or discards failed records: a confirmation first,
// then, with confirm=yes, the action.
func (h *Handler) outboxAction(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Outbox == nil {
		h.refuse(w, r, http.StatusNotFound, "this console has no outbox configured")
		return
	}
	if err := r.ParseForm(); err != nil {
		h.refuse(w, r, http.StatusBadRequest, "malformed form: "+err.Error())
		return
	}
	f := r.PostForm
	action, scope := actionOf(f)
	store := h.cfg.Outbox
	op := store.Retry
	switch action {
	case "retry":
	case "discard":
		op = store.Discard
	default:
		h.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("unknown action %q: want retry or discard", action))
		return
	}
	var seqs []int64
	switch scope {
	case "selected":
		for _, s := range f["seq"] {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 {
				h.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("%q is not a record sequence number: nothing was changed", s))
				return
			}
			seqs = append(seqs, n)
		}
		slices.Sort(seqs)
		seqs = slices.Compact(seqs)
		if len(seqs) == 0 {
			h.refuse(w, r, http.StatusBadRequest, "no record selected: nothing was changed")
			return
		}
	case "all":
	default:
		h.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("unknown scope %q: want selected or all", scope))
		return
	}
	ctx := r.Context()
	if scope == "selected" {
		// Every seq must be a failed record, or nothing is done.
		failed := map[int64]bool{}
		recs, err := store.Failed(ctx, max(h.cfg.FailedLimit, 10000))
		if err != nil {
			h.fail(w, r, err)
			return
		}
		for _, rec := range recs {
			failed[rec.Seq] = true
		}
		var missing []string
		for _, s := range seqs {
			if !failed[s] {
				missing = append(missing, strconv.FormatInt(s, 10))
			}
		}
		if len(missing) > 0 {
			h.refuse(w, r, http.StatusNotFound, "not failed records (or no such records): "+strings.Join(missing, ", ")+": nothing was changed")
			return
		}
	}
	if f.Get("confirm") != "yes" {
		count := len(seqs)
		if scope == "all" {
			st, err := store.Stats(ctx)
			if err != nil {
				h.fail(w, r, err)
				return
			}
			count = int(st.Failed)
		}
		ids := make([]string, len(seqs))
		for i, s := range seqs {
			ids[i] = strconv.FormatInt(s, 10)
		}
		verb := "Retry"
		if action == "discard" {
			verb = "Discard"
		}
		h.render(w, r, http.StatusOK, "confirm", page{Title: "Confirm", Nav: "outbox", Data: confirmData{
			Action: action, Scope: scope, IDs: ids, Count: count, Back: "outbox", Path: "outbox", Verb: verb, What: "record"}})
		return
	}
	var n int64
	var err error
	if scope == "all" {
		n, err = ops.OutboxAll(ctx, store, op)
	} else {
		n, err = op(ctx, seqs...)
	}
	h.log.Info("console: outbox "+action, "scope", scope, "selected", len(seqs), "changed", n, "err", err, "remote", remote(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	verb := map[string]string{"retry": "retried", "discard": "discarded"}[action]
	msg := fmt.Sprintf("%s %d record(s)", verb, n)
	if scope == "selected" && n < int64(len(seqs)) {
		msg += fmt.Sprintf("; %d were no longer failed (someone else acted on them)", int64(len(seqs))-n)
	}
	http.Redirect(w, r, "outbox?done="+url.QueryEscape(msg), http.StatusSeeOther)
}

type tailData struct {
	Queue  string
	Queues []ops.QueueInfo
}

func (h *Handler) tailPage(w http.ResponseWriter, r *http.Request) {
	top, err := h.dlq.Topology(r.Context(), h.cfg.QueuePrefix)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := tailData{Queue: r.URL.Query().Get("queue")}
	for _, q := range top.Queues {
		if !q.IsDead() {
			d.Queues = append(d.Queues, q)
		}
	}
	if d.Queue != "" {
		if _, ok := top.Queue(d.Queue); !ok {
			h.refuse(w, r, http.StatusNotFound, fmt.Sprintf("no queue %q on this broker (with prefix %q)", d.Queue, h.cfg.QueuePrefix))
			return
		}
	}
	h.render(w, r, http.StatusOK, "tail", page{Title: "Tail", Nav: "tail", Data: d})
}

// tailEvents streams a queue's events as server-sent events, through a
// temporary queue that lives as long as the stream.
func (h *Handler) tailEvents(w http.ResponseWriter, r *http.Request) {
	queue := r.URL.Query().Get("queue")
	if _, ok := h.queueOf(w, r, queue); !ok {
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ctx := r.Context()
	var watcher ops.Watcher
	switch d := h.dlq.(type) {
	case *ops.PostgresDLQ:
		pw, err := ops.NewPostgresWatcher(ctx, d.Pool(), d.Schema())
		if err != nil {
			h.fail(w, r, err)
			return
		}
		watcher = pw
	case *ops.AWSDLQ:
		c := *h.cfg.AWS
		c.AutoCreate = true // the temporary queue
		tr, err := edaaws.New(c)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		watcher = ops.NewAWSWatcher(tr)
	}
	msgs, info, err := watcher.Start(ctx, queue, nil)
	defer func() {
		if cerr := watcher.Cleanup(); cerr != nil {
			h.log.Error("console: tail cleanup", "err", cerr)
		}
		h.mu.Lock()
		delete(h.tails, info.TempQueue)
		h.mu.Unlock()
	}()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.mu.Lock()
	h.tails[info.TempQueue] = true
	h.mu.Unlock()
	h.log.Info("console: tail started", "queue", queue, "temporary_queue", info.TempQueue, "remote", remote(r))
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	b, _ := json.Marshal(map[string]string{"what": info.What, "temp": info.TempQueue})
	fmt.Fprintf(w, "event: ready\ndata: %s\n\n", b)
	flusher.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
			flusher.Flush()
		case msg, ok := <-msgs:
			if !ok {
				return
			}
			ev := ops.EventOf(msg)
			msg.Ack()
			b, _ := json.Marshal(struct {
				ops.TailEvent
				Pretty string `json:"pretty"`
			}{ev, pretty(ev.Payload)})
			fmt.Fprintf(w, "event: message\ndata: %s\n\n", b)
			flusher.Flush()
		}
	}
}
