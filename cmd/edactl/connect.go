package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go/logging"
	"github.com/jackc/pgx/v5/pgxpool"

	edaaws "github.com/edaproject/eda/transport/aws"
	"github.com/edaproject/eda/transport/postgres"
)

// awsFlags select the SNS/SQS account: the standard AWS chain
// (environment, shared config, IAM role), or an emulator endpoint.
type awsFlags struct {
	endpoint, region, account string
	attributes                []string // nil: edaaws.DefaultAttributes
	claimBucket, claimPrefix  string   // the services' aws.Config.ClaimCheck
}

// claimCheck is the services' claim check as the flags give it; with
// -aws-endpoint (an emulator, an S3-compatible store) S3 is addressed
// path-style.
func (a *awsFlags) claimCheck() edaaws.ClaimCheckConfig {
	if a.claimBucket == "" {
		return edaaws.ClaimCheckConfig{}
	}
	return edaaws.ClaimCheckConfig{Bucket: a.claimBucket, Prefix: a.claimPrefix, UsePathStyle: a.endpoint != ""}
}

func (a *awsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.endpoint, "aws-endpoint", os.Getenv("EDA_AWS_ENDPOINT"), "SNS/SQS endpoint, e.g. the emulator's http://127.0.0.1:4566 (env EDA_AWS_ENDPOINT); empty: AWS")
	fs.StringVar(&a.region, "region", "", "AWS region (default: the AWS chain's, us-east-1 with -aws-endpoint)")
	fs.StringVar(&a.account, "account", os.Getenv("EDA_AWS_ACCOUNT_ID"), "AWS account id of the ARNs (env EDA_AWS_ACCOUNT_ID; default: ask STS)")
	fs.StringVar(&a.claimBucket, "claim-check-bucket", "", "S3 bucket of the services' claim check (aws.Config.ClaimCheck.Bucket): topology plan/apply keep its lifecycle rule, iam grants it")
	fs.StringVar(&a.claimPrefix, "claim-check-prefix", "", "key prefix of the claim check's blobs (default "+edaaws.DefaultClaimCheckPrefix+")")
	fs.Func("attributes", "metadata the publishers send as message attributes, comma separated, * for all: their aws.Config.Attributes (default "+strings.Join(edaaws.DefaultAttributes, ",")+"); filter policies may match only these", func(s string) error {
		a.attributes = []string{}
		for _, f := range strings.Split(s, ",") {
			if f = strings.TrimSpace(f); f != "" {
				a.attributes = append(a.attributes, f)
			}
		}
		return nil
	})
}

// transport returns an AWS transport; autoCreate lets it create queues
// (tail's temporary queue).
func (a *awsFlags) transport(ctx context.Context, autoCreate bool) (*edaaws.Transport, error) {
	cfg, err := a.config(ctx)
	if err != nil {
		return nil, err
	}
	return edaaws.New(edaaws.Config{AWS: cfg, Endpoint: a.endpoint, AccountID: a.account, AutoCreate: autoCreate, Attributes: a.attributes, ClaimCheck: a.claimCheck()})
}

// config loads the SDK configuration.
func (a *awsFlags) config(ctx context.Context) (awssdk.Config, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if a.region != "" {
		opts = append(opts, awsconfig.WithRegion(a.region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return cfg, fmt.Errorf("load the AWS configuration: %w", err)
	}
	if a.endpoint != "" {
		if cfg.Region == "" {
			cfg.Region = "us-east-1"
		}
		if os.Getenv("AWS_ACCESS_KEY_ID") == "" { // emulators take any credentials
			cfg.Credentials = credentials.NewStaticCredentialsProvider("test", "test", "")
		}
	}
	if hook, ok := ctx.Value(configHookKey{}).(func(*awssdk.Config)); ok {
		hook(&cfg)
	}
	// The SDK warns on stderr about connections closed mid long-poll, which
	// is how tail and dlq stop: keep the operator's terminal clean.
	cfg.Logger = logging.Nop{}
	if cfg.Region == "" {
		return cfg, usagef("no AWS region: pass -region or set AWS_REGION")
	}
	return cfg, nil
}

// configHookKey keys a func(*awssdk.Config) in the context of a command:
// it edits the SDK configuration before any client is built from it (the
// tests record the command's AWS calls with it).
type configHookKey struct{}

// pgFlags select the Postgres transport's tables.
type pgFlags struct {
	dsn, schema string
}

func (p *pgFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.dsn, "db", os.Getenv("EDA_TRANSPORT_DB"), "Postgres transport: postgres:// URL (env EDA_TRANSPORT_DB)")
	fs.StringVar(&p.schema, "schema", postgres.DefaultSchema, "Postgres transport: schema of its tables")
}

// pool connects to Postgres and checks the connection.
func connectPostgres(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	if !isPostgres(dsn) {
		return nil, usagef("-db %q is not a postgres:// URL", dsn)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, usagef("-db: %v", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres at %s is not reachable: %w", redact(dsn), err)
	}
	return pool, nil
}

func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// redact hides the password of a URL.
func redact(dsn string) string {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil || cfg.ConnConfig.Password == "" {
		return dsn
	}
	return strings.Replace(dsn, ":"+cfg.ConnConfig.Password+"@", ":***@", 1)
}
