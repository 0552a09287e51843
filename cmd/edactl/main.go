package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses of run.
const (
	exitOK    = 0
	exitError = 1 // the operation failed: a server is unreachable, a record is missing...
	exitUsage = 2 // bad command line or input file
)

// errUsage marks errors in what the user typed or gave as input; run exits
// with exitUsage on them.
var errUsage = errors.New("usage")

func usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	help    string // edactl help <name>
	run     func(ctx context.Context, c *cli, args []string) error
}

func commands() []command {
	return []command{
		{"topology", "plan|apply -f topology.json: show or make the SNS/SQS changes a topology file declares", `
  edactl topology plan  -f topology.json [-prefix p] [-aws-endpoint URL]   what apply would change
  edactl topology apply -f topology.json [-prefix p] [-aws-endpoint URL]   create or update topics, queues,
                                                                           DLQs, subscriptions, queue policies
Both are idempotent; apply deletes nothing. AWS comes from the standard chain (AWS_PROFILE, AWS_REGION...)
or -aws-endpoint (an emulator). edactl topology plan -h lists the flags.`, runTopology},
		{"iam", "-f topology.json [-service name]: print each service's least-privilege IAM policy", `
  edactl iam -f topology.json [-service name] [-account id] [-region r] [-prefix p]
  edactl iam -f topology.json -role deploy|operator|relay
Prints, per service of the file's "services" section, the IAM policy it needs: publish to its topics,
consume its queues (and their DLQs with readDeadLetters). -role deploy: what topology apply needs;
-role operator: what dlq and tail need; -role relay: an outbox relay that publishes for every service
(one outbox shared by the services). Without -account, STS is asked.`, runIAM},
		{"outbox", "status|failed|retry|discard -db DSN-or-path: the outbox backlog and its failed records", `
  edactl outbox status  -db DB [-schema s] [-table t]   pending records, oldest pending age, failed count
  edactl outbox failed  -db DB [-n 100]                 failed records with their reasons
  edactl outbox retry   -db DB seq... | -all            failed records back to pending: the relay publishes them
  edactl outbox discard -db DB seq... | -all            failed records given up: never published
DB is a postgres:// URL (pgxstore; -schema, default public) or a SQLite file (sqlitestore).`, runOutbox},
		{"dlq", "list|show|redrive -transport aws|postgres: dead-letter and poison queues", `
  edactl dlq list    -transport T [-prefix p]                dead-letter and poison queues with their depth
  edactl dlq show    -transport T -queue Q [-n 20]           peek at messages, why they failed, their history
                                                             (first failure, total deliveries, redrives); consumes nothing
  edactl dlq redrive -transport T -queue Q [event-id...] [-type t] [-reason r] [-since t] [-until t]
                     [-to q] [-n count] [-dry-run]           send what was in Q when it started back to its source,
                                                             then delete it; prints the count per target
-since/-until compare the last failure (RFC 3339, or a duration ago: 1h). A filter that matches nothing
moves nothing and exits 0 ("0 moved"). The operator owns dead-letter and poison queues: no eda component
consumes them.
T is aws (-aws-endpoint, -region) or postgres (-db postgres://..., -schema of the transport's tables).`, runDLQ},
		{"tail", "-queue name: watch events arriving on a queue, without consuming them", `
  edactl tail -transport T -queue Q [-topic t]... [-n count] [-for 1m] [-o json]
Subscribes a temporary queue to Q's topics (and filter policies), prints each event (time, type, id,
correlation, payload), and deletes the temporary queue when it stops.`, runTail},
		{"serve", "-transport aws|postgres [-outbox-db DB]: the operator console in a browser", `
  edactl serve -transport T [-prefix p] [-outbox-db DB [-outbox-schema s]] [-addr 127.0.0.1:8090] [-token t] [-read-only]
Serves the console (package console): the topology with queue depths, the dead-letter and poison queues
(browse, redrive, discard), the outbox's failed records (retry, discard) and a live tail. It binds to
127.0.0.1 by default; any other address needs -token (or EDA_CONSOLE_TOKEN), which every request must
carry. -read-only refuses every action. T is aws (-aws-endpoint, -region) or postgres (-db, -schema).`, runServe},
		{"help", "[command]: this text, or a command's usage", "", nil},
	}
}

// cli is what every command writes to.
type cli struct {
	stdout, stderr io.Writer
	json           bool
}

// run runs edactl with args (without the program name) and returns the exit
// status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		c.usage(stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	if name == "help" || name == "-h" || name == "-help" || name == "--help" {
		if len(rest) > 0 {
			for _, cmd := range commands() {
				if cmd.name == rest[0] && cmd.help != "" {
					fmt.Fprintf(stdout, "edactl %s: %s\n%s\n", cmd.name, cmd.summary, cmd.help)
					return exitOK
				}
			}
			fmt.Fprintf(stderr, "edactl help: unknown command %q\n", rest[0])
			c.usage(stderr)
			return exitUsage
		}
		c.usage(stdout)
		return exitOK
	}
	for _, cmd := range commands() {
		if cmd.name != name || cmd.run == nil {
			continue
		}
		if len(rest) > 0 && (rest[0] == "-h" || rest[0] == "-help" || rest[0] == "--help") && strings.Contains(cmd.summary, "|") {
			return run(ctx, []string{"help", name}, stdout, stderr) // a command with subcommands
		}
		err := cmd.run(ctx, c, rest)
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "edactl %s: %v\n(edactl help %s lists its flags)\n", name, err, name)
			return exitUsage
		default:
			var send *smithyhttp.RequestSendError
			if errors.As(err, &send) {
				fmt.Fprintf(stderr, "edactl %s: SNS/SQS is not reachable (check -aws-endpoint, or start the emulator: scripts/emulator.sh up): %v\n", name, err)
			} else {
				fmt.Fprintf(stderr, "edactl %s: %v\n", name, err)
			}
			return exitError
		}
	}
	fmt.Fprintf(stderr, "edactl: unknown command %q\n", name)
	c.usage(stderr)
	return exitUsage
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprintln(w, "edactl: operate systems built on eda.\n\nUsage: edactl <command> [subcommand] [flags]\n\nCommands:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, cmd := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", cmd.name, cmd.summary)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nEvery command takes -o json for scripts. edactl help <command> shows a command's usage;\nedactl <command> <subcommand> -h lists its flags.")
}

// flagSet returns a flag set for a command that reports errors instead of
// exiting, with the -o flag every command has.
func (c *cli) flagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("edactl "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Func("o", "output: table (default) or json", func(s string) error {
		switch s {
		case "table", "text", "":
			c.json = false
		case "json":
			c.json = true
		default:
			return fmt.Errorf("want table or json, not %q", s)
		}
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "Usage: edactl %s %s\n\nFlags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags and positional arguments in any order (flag stops at
// the first positional argument).
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// subcommand splits "plan -f x" into "plan" and its arguments.
func subcommand(args []string, valid ...string) (string, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			return "", nil, usagef("want one of: %s", strings.Join(valid, ", "))
		}
		return "", nil, usagef("missing subcommand: want one of %s", strings.Join(valid, ", "))
	}
	for _, v := range valid {
		if args[0] == v {
			return v, args[1:], nil
		}
	}
	return "", nil, usagef("unknown subcommand %q: want one of %s", args[0], strings.Join(valid, ", "))
}

// printJSON writes v as indented JSON.
func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows under a header, aligned.
func (c *cli) table(header []string, rows [][]string) {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// envOr returns the environment variable key, or def when it is empty.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// excerpt returns s on one line, cut to n runes.
func excerpt(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
