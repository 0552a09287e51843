package edatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
	"github.com/edaproject/eda/transport/memory"
	"github.com/edaproject/eda/transport/postgres"
)

// Kind names a transport a harness runs on.
type Kind string

// The transports a harness runs on.
const (
	// Memory is the in-process transport: no server, the default.
	Memory Kind = "memory"
	// Postgres is the Postgres transport; each test gets its own schema.
	Postgres Kind = "postgres"
	// AWS is the SNS/SQS transport on an emulator (or AWS); each test gets
	// its own name prefix on topics and queues.
	AWS Kind = "aws"
)

// Environment variables the harness reads.
const (
	// EnvTransport chooses the transport of a Harness whose Config.Transport
	// is empty: memory (the default), postgres or aws. For Each it narrows
	// the transports run to this one (or a comma-separated list).
	EnvTransport = "EDA_TEST_TRANSPORT"
	// EnvPostgresDSN overrides DefaultPostgresDSN.
	EnvPostgresDSN = "EDA_TEST_POSTGRES_DSN"
	// EnvAWSEndpoint overrides DefaultAWSEndpoint.
	EnvAWSEndpoint = "EDA_AWS_ENDPOINT"
)

// Defaults of the servers the harness talks to.
const (
	// DefaultPostgresDSN is a local Postgres with trust auth and database
	// test.
	DefaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	// DefaultAWSEndpoint is a local SNS/SQS emulator (fauxqs, LocalStack).
	DefaultAWSEndpoint = "http://127.0.0.1:4566"
	// DefaultAWSRegion is the region used with an emulator.
	DefaultAWSRegion = "us-east-1"
	// DefaultAWSAccountID is the account of topic and queue ARNs on an
	// emulator.
	DefaultAWSAccountID = "000000000000"
)

// Commands that start the servers, quoted by the failure when one is absent.
const (
	StartPostgres = "scripts/postgres.sh (in the eda repository), or: docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:17"
	StartEmulator = "scripts/emulator.sh up (in the eda repository), or: npx fauxqs (any SNS/SQS emulator on " + EnvAWSEndpoint + ")"
)

// ErrUnknownTransport: EnvTransport or Config.Transport names no Kind.
var ErrUnknownTransport = errors.New("edatest: unknown transport")

// Kinds returns every transport a harness runs on.
func Kinds() []Kind { return []Kind{Memory, Postgres, AWS} }

// ParseKind returns the Kind named s; "" is Memory.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(strings.TrimSpace(s)); k {
	case "":
		return Memory, nil
	case Memory, Postgres, AWS:
		return k, nil
	}
	return "", fmt.Errorf("%w %q: want memory, postgres or aws", ErrUnknownTransport, s)
}

// KindFromEnv returns the Kind EnvTransport names, Memory when it is unset.
func KindFromEnv() (Kind, error) { return ParseKind(os.Getenv(EnvTransport)) }

// Each runs body as a subtest per transport, named after it: every Kind, or
// the ones EnvTransport lists. A body that calls New with an empty
// Config.Transport gets the subtest's transport.
//
//	edatest.Each(t, func(t *testing.T, kind edatest.Kind) {
//		h := edatest.New(t, edatest.Config{Transport: kind})
//		...
//	})
func Each(t *testing.T, body func(t *testing.T, kind Kind)) {
	t.Helper()
	kinds := Kinds()
	if v := os.Getenv(EnvTransport); v != "" {
		kinds = nil
		for _, s := range strings.Split(v, ",") {
			k, err := ParseKind(s)
			if err != nil {
				t.Fatalf("edatest: %s: %v", EnvTransport, err)
			}
			kinds = append(kinds, k)
		}
	}
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) { body(t, k) })
	}
}

// Env is one test's isolated place on a transport's server: a Postgres
// schema or an SNS/SQS name prefix. NewEnv removes it when the test ends.
type Env struct {
	Kind Kind
	// PostgresDSN and Schema, on Postgres. Cleanup drops Schema and every
	// schema whose name starts with it (Schema+"_transport", say).
	PostgresDSN string
	Schema      string
	// AWSEndpoint and Prefix, on SNS/SQS. Cleanup deletes every topic and
	// queue whose name starts with Prefix.
	AWSEndpoint string
	Prefix      string
}

// NewEnv checks that kind's server answers (failing the test with the
// command that starts it) and returns a fresh, isolated Env on it, removed
// by t.Cleanup. Memory needs no server and gets an Env with only a Prefix.
func NewEnv(t TB, kind Kind, cfg Config) Env {
	t.Helper()
	id := randomID()
	e := Env{Kind: kind, Prefix: "edatest-" + id + "-"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch kind {
	case Memory:
	case Postgres:
		e.PostgresDSN, e.Schema = cfg.postgresDSN(), "edatest_"+id
		pool, err := pgxpool.New(ctx, e.PostgresDSN)
		if err == nil {
			err = pool.Ping(ctx)
		}
		if err != nil {
			if pool != nil {
				pool.Close()
			}
			t.Fatalf("edatest: Postgres at %s (%s) is not reachable: %v; start it with: %s", redact(e.PostgresDSN), EnvPostgresDSN, err, StartPostgres)
		}
		t.Cleanup(func() {
			defer pool.Close()
			err := dropSchemas(pool, e.Schema)
			for try := 1; err != nil && try < 3; try++ { // DROP ... CASCADE can lose a deadlock to a concurrent one
				err = dropSchemas(pool, e.Schema)
			}
			if err != nil {
				t.Errorf("edatest: drop schema %s: %v", e.Schema, err)
			}
		})
	case AWS:
		e.AWSEndpoint = cfg.awsEndpoint()
		if err := checkEmulator(ctx, e.AWSEndpoint); err != nil {
			t.Fatalf("edatest: SNS/SQS at %s (%s) is not reachable: %v; start it with: %s", e.AWSEndpoint, EnvAWSEndpoint, err, StartEmulator)
		}
		sdk := cfg.awsSDK()
		t.Cleanup(func() {
			if err := deleteByPrefix(sdk, e.AWSEndpoint, e.Prefix); err != nil {
				t.Errorf("edatest: delete topics and queues %s*: %v", e.Prefix, err)
			}
		})
	default:
		t.Fatalf("edatest: %v", fmt.Errorf("%w %q", ErrUnknownTransport, kind))
	}
	return e
}

// newTransport returns a fresh transport of e's kind, closed when the test
// ends (before Env's cleanup, which was registered first).
func (e Env) newTransport(t TB, cfg Config) transport.Transport {
	t.Helper()
	var tr transport.Transport
	var err error
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch e.Kind {
	case Memory:
		tr, err = memory.New(cfg.Memory)
	case Postgres:
		pc := cfg.Postgres.Config
		pc.DSN, pc.Pool, pc.Schema = e.PostgresDSN, nil, e.Schema
		if err = postgres.Migrate(ctx, pc); err == nil {
			tr, err = postgres.New(ctx, pc)
		}
	case AWS:
		ac := cfg.AWS.Config
		ac.AWS, ac.Endpoint, ac.AutoCreate = cfg.awsSDK(), e.AWSEndpoint, true
		if ac.AccountID == "" {
			ac.AccountID = DefaultAWSAccountID
		}
		var at *edaaws.Transport
		if at, err = edaaws.New(ac); err == nil {
			tr = prefixed(at, e.Prefix)
		}
	}
	if err != nil {
		t.Fatalf("edatest: %s transport: %v", e.Kind, err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// PostgresConfig configures the Postgres transport of a harness.
type PostgresConfig struct {
	// DSN of the server. Default EnvPostgresDSN, else DefaultPostgresDSN.
	DSN string
	// Config of the transport; its DSN, Pool and Schema are set by the
	// harness.
	Config postgres.Config
}

// AWSConfig configures the SNS/SQS transport of a harness.
type AWSConfig struct {
	// Endpoint of SNS and SQS. Default EnvAWSEndpoint, else
	// DefaultAWSEndpoint.
	Endpoint string
	// SDK is the AWS SDK config. Default: region DefaultAWSRegion and
	// static test credentials, which an emulator takes.
	SDK *awssdk.Config
	// Config of the transport; its AWS, Endpoint and AutoCreate are set by
	// the harness, AccountID defaults to DefaultAWSAccountID.
	Config edaaws.Config
}

func (c Config) postgresDSN() string {
	if c.Postgres.DSN != "" {
		return c.Postgres.DSN
	}
	if v := os.Getenv(EnvPostgresDSN); v != "" {
		return v
	}
	return DefaultPostgresDSN
}

func (c Config) awsEndpoint() string {
	if c.AWS.Endpoint != "" {
		return c.AWS.Endpoint
	}
	if v := os.Getenv(EnvAWSEndpoint); v != "" {
		return v
	}
	return DefaultAWSEndpoint
}

func (c Config) awsSDK() awssdk.Config {
	if c.AWS.SDK != nil {
		return *c.AWS.SDK
	}
	return awssdk.Config{Region: DefaultAWSRegion, Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")}
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// redact hides a DSN's password.
func redact(dsn string) string {
	if i, j := strings.Index(dsn, "://"), strings.LastIndex(dsn, "@"); i >= 0 && j > i {
		if k := strings.Index(dsn[i+3:j], ":"); k >= 0 {
			return dsn[:i+3+k] + ":***" + dsn[j:]
		}
	}
	return dsn
}

func dropSchemas(pool *pgxpool.Pool, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, `SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)`, prefix)
	if err != nil {
		return err
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if _, err := pool.Exec(ctx, `DROP SCHEMA IF EXISTS "`+n+`" CASCADE`); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func checkEmulator(ctx context.Context, endpoint string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(endpoint, "/")+"/health", nil)
	if err != nil {
		return err
	}
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("health check: %s", resp.Status)
	}
	return nil
}

// deleteByPrefix deletes the queues and topics (with their subscriptions)
// whose names start with prefix.
func deleteByPrefix(sdk awssdk.Config, endpoint, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sqsc := sqs.NewFromConfig(sdk, func(o *sqs.Options) { o.BaseEndpoint = &endpoint })
	snsc := sns.NewFromConfig(sdk, func(o *sns.Options) { o.BaseEndpoint = &endpoint })
	var errs []error
	qp := sqs.NewListQueuesPaginator(sqsc, &sqs.ListQueuesInput{QueueNamePrefix: &prefix})
	for qp.HasMorePages() {
		page, err := qp.NextPage(ctx)
		if err != nil {
			errs = append(errs, err)
			break
		}
		for _, url := range page.QueueUrls {
			if _, err := sqsc.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: &url}); err != nil {
				errs = append(errs, err)
			}
		}
	}
	tp := sns.NewListTopicsPaginator(snsc, &sns.ListTopicsInput{})
	for tp.HasMorePages() {
		page, err := tp.NextPage(ctx)
		if err != nil {
			errs = append(errs, err)
			break
		}
		for _, topic := range page.Topics {
			arn := awssdk.ToString(topic.TopicArn)
			if !strings.HasPrefix(arn[strings.LastIndex(arn, ":")+1:], prefix) {
				continue
			}
			subs, err := snsc.ListSubscriptionsByTopic(ctx, &sns.ListSubscriptionsByTopicInput{TopicArn: &arn})
			if err == nil {
				for _, s := range subs.Subscriptions {
					if s.SubscriptionArn != nil && strings.HasPrefix(*s.SubscriptionArn, "arn:") {
						_, _ = snsc.Unsubscribe(ctx, &sns.UnsubscribeInput{SubscriptionArn: s.SubscriptionArn})
					}
				}
			}
			if _, err := snsc.DeleteTopic(ctx, &sns.DeleteTopicInput{TopicArn: &arn}); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
