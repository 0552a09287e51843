package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/edaproject/eda/internal/ops"
	edaaws "github.com/edaproject/eda/transport/aws"
)

func runTail(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("tail", "-transport aws|postgres -queue name [-topic t]... [-n count] [-for duration]")
	kind := fs.String("transport", envOr("EDA_TRANSPORT", ""), "aws or postgres (env EDA_TRANSPORT)")
	var af awsFlags
	af.register(fs)
	var pf pgFlags
	pf.register(fs)
	queue := fs.String("queue", "", "show what this queue receives: tail subscribes a temporary queue to its topics")
	var topics []string
	fs.Func("topic", "watch this topic (repeatable) instead of the queue's topics", func(s string) error {
		if s == "" {
			return errors.New("empty topic")
		}
		topics = append(topics, s)
		return nil
	})
	count := fs.Int("n", 0, "stop after this many events (default: until interrupted)")
	forDur := fs.Duration("for", 0, "stop after this long (default: until interrupted)")
	width := fs.Int("width", 100, "table: payload excerpt length")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	if *queue == "" && len(topics) == 0 {
		return usagef("-queue or -topic is required")
	}
	if *count < 0 || *forDur < 0 || *width < 10 {
		return usagef("-n, -for must not be negative; -width at least 10")
	}
	if *forDur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *forDur)
		defer cancel()
	}

	var w ops.Watcher
	switch *kind {
	case "aws":
		var tr *edaaws.Transport
		if tr, err = af.transport(ctx, true); err == nil {
			w = ops.NewAWSWatcher(tr)
		}
	case "postgres":
		if pf.dsn == "" {
			return usagef("-transport postgres needs -db postgres://...")
		}
		pool, perr := connectPostgres(ctx, pf.dsn)
		if perr != nil {
			return perr
		}
		defer pool.Close()
		w, err = ops.NewPostgresWatcher(ctx, pool, pf.schema)
	case "":
		return usagef("-transport is required: aws or postgres")
	default:
		return usagef("-transport %q: want aws or postgres", *kind)
	}
	if err != nil {
		return err
	}
	msgs, info, err := w.Start(ctx, *queue, topics)
	if err != nil {
		w.Cleanup()
		return err
	}
	defer func() {
		if cerr := w.Cleanup(); cerr != nil {
			fmt.Fprintf(c.stderr, "edactl tail: %v\n", cerr)
		}
	}()
	fmt.Fprintf(c.stderr, "tailing %s (temporary queue %s); Ctrl-C stops\n", info.What, info.TempQueue)
	if !c.json {
		fmt.Fprintf(c.stdout, "%-30s  %-32s  %-36s  %-36s  %s\n", "TIME", "TYPE", "ID", "CORRELATION", "PAYLOAD")
	}
	seen := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-msgs:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("the subscription ended")
			}
			ev := ops.EventOf(msg)
			msg.Ack()
			if c.json {
				b, _ := json.Marshal(ev)
				fmt.Fprintf(c.stdout, "%s\n", b)
			} else {
				fmt.Fprintf(c.stdout, "%-30s  %-32s  %-36s  %-36s  %s\n", ev.Time, ev.Type, ev.ID, ev.Correlation, excerpt(ev.Payload, *width))
			}
			seen++
			if *count > 0 && seen >= *count {
				return nil
			}
		}
	}
}
