package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// violation is one broken invariant, with the orders it involves.
type violation struct {
	Invariant string
	Detail    string
	Orders    []string
}

// invariant is the verdict on one invariant.
type invariant struct {
	Name   string
	OK     bool
	Detail string
}

// dbOrder is a row of the example's orders table, with its effects.
type dbOrder struct {
	ID, Customer, Status, Reason string
	Items                        []item
	Created, Final               int64
	Reservations                 int
	ReservationStatus            string
	ReservedAt                   int64
	Notifications                int
	NotifiedAt                   int64
	CreatedEvents, StockEvents   int
}

// checker gathers the verdicts of a phase.
type checker struct {
	res   *result
	names []string
	byInv map[string]*invariant
}

func newChecker(res *result) *checker { return &checker{res: res, byInv: map[string]*invariant{}} }

func (c *checker) declare(name string) {
	c.names = append(c.names, name)
	c.byInv[name] = &invariant{Name: name, OK: true}
}

func (c *checker) fail(name, detail string, orders ...string) {
	inv := c.byInv[name]
	inv.OK = false
	if inv.Detail == "" {
		inv.Detail = detail
	}
	c.res.Violations = append(c.res.Violations, violation{Invariant: name, Detail: detail, Orders: orders})
}

func (c *checker) note(name, detail string) {
	if inv := c.byInv[name]; inv.OK && inv.Detail == "" {
		inv.Detail = detail
	}
}

func (c *checker) done() {
	for _, n := range c.names {
		c.res.Invariants = append(c.res.Invariants, *c.byInv[n])
	}
}

const (
	invQuiet      = "drained: nothing left to do before the deadline"
	invAccepted   = "every accepted order reached its final state"
	invStored     = "every stored order is final (accepted or not)"
	invValid      = "no valid order refused"
	invReserve    = "one reservation per order, matching its state"
	invNotify     = "one notification per order"
	invStock      = "stock taken = quantities of the reserved orders"
	invOutbox     = "outbox: nothing pending or failed, one record per event"
	invFIFO       = "FIFO: each customer's orders handled in placement order"
	invPoison     = "poison queue: exactly the injected poison messages, with reasons"
	invDLQ        = "DLQs empty"
	invInFlight   = "no message left in a work queue or in flight"
	invNoCrash    = "processes exit only when the nemesis kills them"
	invMemory     = "resident memory does not grow from the first orders to the last"
	maxListOrders = 20
)

// check reads the databases and the broker and judges the phase.
func (p *phase) check(ctx context.Context, res *result, quiet bool, why string) error {
	c := newChecker(res)
	for _, n := range []string{invQuiet, invAccepted, invStored, invValid, invReserve, invNotify, invStock, invOutbox} {
		c.declare(n)
	}
	if p.fifo {
		c.declare(invFIFO)
	}
	for _, n := range []string{invPoison, invDLQ, invInFlight, invNoCrash, invMemory} {
		c.declare(n)
	}
	defer c.done()
	if !quiet {
		c.fail(invQuiet, "after "+p.cfg.Drain.String()+": "+why)
	}

	orders, err := p.readOrders(ctx)
	if err != nil {
		return err
	}
	// History against state.
	var lost, pending, refused []string
	for _, o := range p.orders {
		if o.Refused != "" {
			refused = append(refused, o.ID+" ("+o.Refused+")")
		}
		if o.Accepted == 0 {
			continue
		}
		d, ok := orders[o.ID]
		switch {
		case !ok:
			lost = append(lost, o.ID)
		case d.Status != "reserved" && d.Status != "rejected":
			pending = append(pending, o.ID)
		}
	}
	if len(lost) > 0 {
		c.fail(invAccepted, fmt.Sprintf("%d accepted orders are not in the database", len(lost)), lost...)
	}
	if len(pending) > 0 {
		c.fail(invAccepted, fmt.Sprintf("%d accepted orders never reached a final state", len(pending)), pending...)
	}
	if len(refused) > 0 {
		c.fail(invValid, fmt.Sprintf("%d valid orders refused with a 4xx", len(refused)), refused...)
	}
	var storedPending []string
	var reserveBad, notifyBad, createdBad, stockEvBad []string
	taken := map[string]int{}
	for id, d := range orders {
		if d.Status != "reserved" && d.Status != "rejected" {
			storedPending = append(storedPending, id)
		}
		if d.Status == "reserved" {
			res.Reserved++
			for _, it := range d.Items {
				taken[it.SKU] += it.Qty
			}
		} else if d.Status == "rejected" {
			res.Rejected++
		}
		if d.Reservations != 1 || (d.Status != "pending" && d.ReservationStatus != d.Status) {
			reserveBad = append(reserveBad, fmt.Sprintf("%s (%d reservations, reservation %q, order %q)", id, d.Reservations, d.ReservationStatus, d.Status))
		}
		if d.Notifications != 1 {
			notifyBad = append(notifyBad, fmt.Sprintf("%s (%d notifications)", id, d.Notifications))
		}
		if d.CreatedEvents != 1 {
			createdBad = append(createdBad, fmt.Sprintf("%s (%d OrderCreated records)", id, d.CreatedEvents))
		}
		if d.StockEvents != d.Reservations {
			stockEvBad = append(stockEvBad, fmt.Sprintf("%s (%d inventory records for %d reservations)", id, d.StockEvents, d.Reservations))
		}
	}
	if len(storedPending) > 0 {
		c.fail(invStored, fmt.Sprintf("%d stored orders still pending", len(storedPending)), storedPending...)
	}
	if len(reserveBad) > 0 {
		c.fail(invReserve, fmt.Sprintf("%d orders without exactly one matching reservation", len(reserveBad)), reserveBad...)
	}
	if len(notifyBad) > 0 {
		c.fail(invNotify, fmt.Sprintf("%d orders without exactly one notification", len(notifyBad)), notifyBad...)
	}
	if len(createdBad) > 0 {
		c.fail(invOutbox, fmt.Sprintf("%d orders without exactly one OrderCreated outbox record", len(createdBad)), createdBad...)
	}
	if len(stockEvBad) > 0 {
		c.fail(invOutbox, fmt.Sprintf("%d orders whose inventory outbox records do not match their reservations", len(stockEvBad)), stockEvBad...)
	}
	var orphans []string
	if err := p.collect(ctx, `SELECT order_id FROM reservations r WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = r.order_id)
		UNION ALL SELECT order_id FROM notifications n WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = n.order_id)`, &orphans); err != nil {
		return err
	}
	if len(orphans) > 0 {
		c.fail(invReserve, fmt.Sprintf("%d reservations or notifications of orders that do not exist", len(orphans)), orphans...)
	}

	// Stock.
	final := map[string]int{}
	rows, err := p.admin.Query(ctx, `SELECT sku, stock FROM products`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var sku string
		var n int
		if err := rows.Scan(&sku, &n); err != nil {
			rows.Close()
			return err
		}
		final[sku] = n
	}
	rows.Close()
	var stockBad []string
	for sku, initial := range p.stock {
		if initial-final[sku] != taken[sku] {
			stockBad = append(stockBad, fmt.Sprintf("%s: %d taken from stock, reserved orders hold %d", sku, initial-final[sku], taken[sku]))
		}
	}
	sort.Strings(stockBad)
	if len(stockBad) > 0 {
		c.fail(invStock, strings.Join(stockBad, "; "))
	}
	c.note(invStock, fmt.Sprintf("%d reserved, %d rejected", res.Reserved, res.Rejected))

	// Outbox.
	var open, failed int
	if err := p.admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM `+outboxTable+`) + (SELECT count(*) FROM `+outboxTable+`_scheduled)
		+ (SELECT count(*) FROM `+outboxTable+`_held WHERE state = 0), (SELECT count(*) FROM `+outboxTable+`_held WHERE state = 2)`).Scan(&open, &failed); err != nil {
		return err
	}
	if open+failed > 0 {
		var ids []string
		_ = p.collect(ctx, `SELECT coalesce(convert_from(payload, 'UTF8')::jsonb->>'order_id', event_id) || ' (' || last_error || ')' FROM (
			SELECT payload, event_id, '' AS last_error FROM `+outboxTable+`
			UNION ALL SELECT payload, event_id, last_error FROM `+outboxTable+`_scheduled
			UNION ALL SELECT payload, event_id, last_error FROM `+outboxTable+`_held) r LIMIT 50`, &ids)
		c.fail(invOutbox, fmt.Sprintf("%d outbox records pending, %d failed", open, failed), ids...)
	}

	// FIFO: per customer, in placement order, every effect later than the
	// one before.
	if p.fifo {
		seq := map[string]int{}
		for _, o := range p.orders {
			seq[o.ID] = o.Seq
		}
		byCustomer := map[string][]*dbOrder{}
		for _, d := range orders {
			byCustomer[d.Customer] = append(byCustomer[d.Customer], d)
		}
		var bad []string
		for cust, list := range byCustomer {
			sort.Slice(list, func(i, j int) bool { return seq[list[i].ID] < seq[list[j].ID] })
			for i := 1; i < len(list); i++ {
				a, b := list[i-1], list[i]
				for _, e := range []struct {
					what string
					x, y int64
				}{{"reserved", a.ReservedAt, b.ReservedAt}, {"notified", a.NotifiedAt, b.NotifiedAt}, {"finished", a.Final, b.Final}} {
					if e.x != 0 && e.y != 0 && e.y < e.x {
						bad = append(bad, fmt.Sprintf("%s: %s %s before %s", cust, b.ID, e.what, a.ID))
					}
				}
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			c.fail(invFIFO, fmt.Sprintf("%d out-of-order effects", len(bad)), bad...)
		}
		c.note(invFIFO, fmt.Sprintf("%d customers", len(byCustomer)))
	}

	// Broker.
	qs, err := p.queueDepths(ctx)
	if err != nil {
		return fmt.Errorf("read queues: %w", err)
	}
	var inflight []string
	for _, q := range qs {
		if q.InFlight > 0 || (q.work() && (q.Visible > 0 || q.Delayed > 0)) {
			inflight = append(inflight, fmt.Sprintf("%s: %d visible, %d in flight, %d delayed", q.Name, q.Visible, q.InFlight, q.Delayed))
		}
	}
	if len(inflight) > 0 {
		c.fail(invInFlight, strings.Join(inflight, "; "))
	}
	c.note(invInFlight, fmt.Sprintf("%d queues", len(qs)))
	got := map[string]map[string]int{} // event id → queue → copies
	for _, q := range qs {
		if !q.Poison && !q.DLQ {
			continue
		}
		msgs, err := p.readQueue(ctx, q)
		if err != nil {
			c.fail(map[bool]string{true: invPoison, false: invDLQ}[q.Poison], err.Error())
		}
		for _, m := range msgs {
			if q.DLQ {
				c.fail(invDLQ, fmt.Sprintf("%s holds event %s", q.Name, m.EventID), orDash(m.OrderID))
				continue
			}
			if !p.poison[m.EventID] {
				c.fail(invPoison, fmt.Sprintf("a message that is not one of the injected poison messages was poisoned from %s: %s: %s",
					orDash(m.Queue), orDash(m.Reason), firstLine(m.Error)), orDash(m.OrderID)+" (event "+m.EventID+")")
				continue
			}
			if m.Reason == "" {
				c.fail(invPoison, fmt.Sprintf("poison message %s has no reason", m.EventID))
			}
			if got[m.EventID] == nil {
				got[m.EventID] = map[string]int{}
			}
			got[m.EventID][m.Queue]++
		}
	}
	extra := 0
	for id := range p.poison {
		if len(got[id]) != 2 {
			c.fail(invPoison, fmt.Sprintf("injected poison message %s is in the poison queue from %d queues (want 2: inventory and notification): %v", id, len(got[id]), got[id]))
		}
		for _, n := range got[id] {
			extra += n - 1
		}
	}
	c.note(invPoison, fmt.Sprintf("%d injected, each from both consuming queues with its reason; %d extra copies (a consumer killed between poisoning and ack)", len(p.poison), extra))

	var crashes []string
	for _, slot := range p.slots {
		crashes = append(crashes, p.services[slot].crashes()...)
	}
	if len(crashes) > 0 {
		c.fail(invNoCrash, fmt.Sprintf("%d exits the nemesis did not cause", len(crashes)), crashes...)
	}
	startFailures := 0
	for _, slot := range p.slots {
		startFailures += len(p.services[slot].failedStarts())
	}
	c.note(invNoCrash, fmt.Sprintf("%d restarts failed at startup while a fault lasted and were restarted again", startFailures))

	// Latency and recovery from the history.
	var lat []time.Duration
	type done struct{ accepted, final int64 }
	var dones []done
	for _, o := range p.orders {
		d, ok := orders[o.ID]
		if o.Accepted == 0 || !ok || d.Final == 0 {
			continue
		}
		lat = append(lat, time.Duration(d.Final-o.First))
		dones = append(dones, done{o.Accepted, d.Final})
	}
	slices.Sort(lat)
	res.P50, res.P99 = percentile(lat, 50), percentile(lat, 99)
	if len(lat) > 0 {
		res.Max = lat[len(lat)-1]
	}
	sort.Slice(dones, func(i, j int) bool { return dones[i].accepted < dones[j].accepted })
	prefixMax := make([]int64, len(dones))
	for i, d := range dones {
		prefixMax[i] = d.final
		if i > 0 && prefixMax[i-1] > d.final {
			prefixMax[i] = prefixMax[i-1]
		}
	}
	for _, f := range res.Faults {
		end := p.began.Add(f.End).UnixNano()
		i := sort.Search(len(dones), func(i int) bool { return dones[i].accepted >= end })
		if i == 0 {
			continue
		}
		if r := time.Duration(prefixMax[i-1] - end); r > res.LongestRecovery {
			res.LongestRecovery, res.RecoveryAfter = r, f.String()
		}
	}
	return nil
}

// readOrders reads every order of the phase with its effects.
func (p *phase) readOrders(ctx context.Context) (map[string]*dbOrder, error) {
	rows, err := p.admin.Query(ctx, `
		SELECT o.id, o.customer_id, o.items, o.status, o.reason, o.created_at, coalesce(o.final_at, 0),
			(SELECT count(*) FROM reservations r WHERE r.order_id = o.id),
			coalesce((SELECT max(r.status) FROM reservations r WHERE r.order_id = o.id), ''),
			coalesce((SELECT max(r.created_at) FROM reservations r WHERE r.order_id = o.id), 0),
			(SELECT count(*) FROM notifications n WHERE n.order_id = o.id),
			coalesce((SELECT max(n.created_at) FROM notifications n WHERE n.order_id = o.id), 0),
			coalesce(e.created, 0), coalesce(e.stock, 0)
		FROM orders o LEFT JOIN (
			SELECT convert_from(payload, 'UTF8')::jsonb->>'order_id' AS order_id,
				count(*) FILTER (WHERE topic = $1) AS created,
				count(*) FILTER (WHERE topic = $2) AS stock
			FROM (SELECT payload, topic FROM `+outboxTable+` UNION ALL SELECT payload, topic FROM `+outboxTable+`_scheduled
				UNION ALL SELECT payload, topic FROM `+outboxTable+`_held UNION ALL SELECT payload, topic FROM `+outboxTable+`_done) r
			GROUP BY 1) e ON e.order_id = o.id`,
		p.prefix+topicOrders, p.prefix+"inventory-events")
	if err != nil {
		return nil, fmt.Errorf("read orders: %w", err)
	}
	defer rows.Close()
	out := map[string]*dbOrder{}
	for rows.Next() {
		d := &dbOrder{}
		var items string
		if err := rows.Scan(&d.ID, &d.Customer, &items, &d.Status, &d.Reason, &d.Created, &d.Final,
			&d.Reservations, &d.ReservationStatus, &d.ReservedAt, &d.Notifications, &d.NotifiedAt,
			&d.CreatedEvents, &d.StockEvents); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(items), &d.Items); err != nil {
			return nil, fmt.Errorf("order %s: items %q: %w", d.ID, items, err)
		}
		out[d.ID] = d
	}
	return out, rows.Err()
}

func (p *phase) collect(ctx context.Context, query string, into *[]string) error {
	rows, err := p.admin.Query(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return err
		}
		*into = append(*into, s)
	}
	return rows.Err()
}

// judgeMemory compares each process slot's resident memory over the first
// window of orders with the last: a growth of more than half and more than
// 48 MB is a leak.
func (p *phase) judgeMemory(res *result) {
	n := int64(len(p.orders))
	w := min(int64(10000), max(1, n/5))
	bySlot := map[string][]memSample{}
	p.memMu.Lock()
	for _, s := range p.mem {
		bySlot[s.Slot] = append(bySlot[s.Slot], s)
	}
	p.memMu.Unlock()
	inv := -1
	for i, v := range res.Invariants {
		if v.Name == invMemory {
			inv = i
		}
	}
	var leaks []string
	slots := append(slices.Clone(p.slots), "emulator")
	for _, slot := range slots {
		row := memRow{Slot: slot, Judged: slot != "emulator", FirstWin: fmt.Sprintf("orders 1-%d", w), LastWin: fmt.Sprintf("orders %d-%d", n-w+1, n)}
		for _, s := range bySlot[slot] {
			row.Samples++
			row.MaxKB = max(row.MaxKB, s.RSSKB)
			if s.Accepted > 0 && s.Accepted <= w {
				row.FirstKB = max(row.FirstKB, s.RSSKB)
			}
			if s.Accepted > n-w {
				row.LastKB = max(row.LastKB, s.RSSKB)
			}
		}
		if row.Judged && row.FirstKB > 0 && row.LastKB > row.FirstKB*3/2 && row.LastKB-row.FirstKB > 48<<10 {
			row.Leak = true
			leaks = append(leaks, fmt.Sprintf("%s: %d MB over %s, %d MB over %s", slot, row.FirstKB>>10, row.FirstWin, row.LastKB>>10, row.LastWin))
		}
		res.Memory = append(res.Memory, row)
	}
	if inv >= 0 {
		if len(leaks) > 0 {
			res.Invariants[inv].OK = false
			res.Invariants[inv].Detail = strings.Join(leaks, "; ")
			res.Violations = append(res.Violations, violation{Invariant: invMemory, Detail: strings.Join(leaks, "; ")})
		} else {
			res.Invariants[inv].Detail = fmt.Sprintf("max RSS per process over the first %d orders vs the last %d (see the memory table)", w, w)
		}
	}
}

func percentile(ds []time.Duration, pc int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := (len(ds)*pc + 99) / 100
	return ds[max(0, min(len(ds)-1, i-1))]
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}
