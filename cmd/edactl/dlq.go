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

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/internal/ops"
)

// The dead-letter logic (peek, redrive, discard on SQS and on the Postgres
// transport) is internal/ops, which the console (package console) calls
// too; this file is the command line around it.

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
	o := ops.RedriveOptions{IDs: map[string]bool{}, Types: map[string]bool{}, Reasons: map[string]bool{}}
	fs.Func("id", "redrive: only this event id or message id (repeatable; ids may also be given as arguments)", func(s string) error {
		o.IDs[s] = true
		return nil
	})
	fs.Func("type", "redrive: only events of this type (repeatable)", func(s string) error {
		if s == "" {
			return errors.New("empty type")
		}
		o.Types[s] = true
		return nil
	})
	fs.Func("reason", "redrive: only messages poisoned for this reason: "+strings.Join(ops.Reasons, ", ")+" (repeatable)", func(s string) error {
		if !slices.Contains(ops.Reasons, s) {
			return fmt.Errorf("want one of %s", strings.Join(ops.Reasons, ", "))
		}
		o.Reasons[s] = true
		return nil
	})
	now := time.Now()
	fs.Func("since", "redrive: only messages whose last failure is at or after this: RFC 3339, or a duration ago (1h)", func(s string) (err error) {
		o.Since, err = ops.ParseWhen(s, now)
		return err
	})
	fs.Func("until", "redrive: only messages whose last failure is at or before this: RFC 3339, or a duration ago (10m)", func(s string) (err error) {
		o.Until, err = ops.ParseWhen(s, now)
		return err
	})
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if sub == "redrive" {
		for _, p := range pos {
			o.IDs[p] = true
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
	if !o.Since.IsZero() && !o.Until.IsZero() && o.Since.After(o.Until) {
		return usagef("-since %s is after -until %s", o.Since.Format(time.RFC3339), o.Until.Format(time.RFC3339))
	}
	if *visibility < time.Second || *visibility > 12*time.Hour {
		return usagef("-visibility %s: want 1s to 12h", *visibility)
	}
	var b ops.DLQ
	switch *kind {
	case "aws":
		tr, err := af.transport(ctx, false)
		if err != nil {
			return err
		}
		b = ops.NewAWSDLQ(tr, *visibility)
	case "postgres":
		if pf.dsn == "" {
			return usagef("-transport postgres needs -db postgres://...")
		}
		pool, err := connectPostgres(ctx, pf.dsn)
		if err != nil {
			return err
		}
		defer pool.Close()
		if b, err = ops.NewPostgresDLQ(ctx, pool, pf.schema); err != nil {
			return fmt.Errorf("%w (-schema)", err)
		}
	case "":
		return usagef("-transport is required: aws or postgres")
	default:
		return usagef("-transport %q: want aws or postgres", *kind)
	}
	defer b.Close()

	switch sub {
	case "list":
		qs, err := b.List(ctx, *prefix)
		if err != nil {
			return err
		}
		if c.json {
			if qs == nil {
				qs = []ops.DeadQueue{}
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
		page, err := b.Peek(ctx, *queue, ops.PeekOptions{Limit: *limit})
		if err != nil {
			return err
		}
		msgs := page.Messages
		if c.json {
			if msgs == nil {
				msgs = []ops.DeadMessage{}
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
	o.Limit, o.To, o.DryRun, o.Started = *limit, *to, *dryRun, time.Now()
	res, err := b.Redrive(ctx, *queue, o)
	if err != nil {
		return err
	}
	res.Queue, res.DryRun = *queue, o.DryRun
	if c.json {
		if res.Moved == nil {
			res.Moved = []ops.MovedMessage{}
		}
		if res.Failed == nil {
			res.Failed = []ops.FailedMove{}
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

func (c *cli) printRedrive(res ops.RedriveResult) {
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

func (c *cli) printDead(m ops.DeadMessage) {
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
