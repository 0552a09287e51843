# The README's test command is `make test`; .ci/run calls it.
GO ?= go

.PHONY: test services vet outage fuzz bench bench-smoke bench-aws bench-postgres bench-middleware bench-outbox bench-e2e bench-e2e-short
test: services vet
	$(GO) test -race -count=1 -timeout 20m ./...
	# The harness's own suite and Examples on the two server transports too
	# (./... ran them on memory); a few seconds each.
	EDA_TEST_TRANSPORT=postgres $(GO) test -race -count=1 ./eda/edatest/
	EDA_TEST_TRANSPORT=aws $(GO) test -race -count=1 ./eda/edatest/

# The real servers the tests talk to: PostgreSQL and the SNS/SQS emulator;
# the IAM policy engine the policy tests evaluate with (iam-simulate); and
# headless Chromium for the console's browser tests.
services:
	scripts/postgres.sh
	scripts/emulator.sh up
	scripts/iamsim.sh install
	scripts/chromium.sh install

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

# The default redelivery schedule in full: a handler down for 2 minutes on the
# Postgres transport, with the orders example's queues, loses nothing (~3 min).
outage: services
	$(GO) test -race -count=1 -tags outage -timeout 15m -run 'TestRedeliveryOutageFull' -v ./middleware/

# Benchmarks of the core against plain Watermill, same run; ratios via benchstat.
bench:
	@mkdir -p bench
	$(GO) test -run '^$$' -bench . -benchmem -count 6 ./eda/ ./transport/memory/ | tee bench/core.txt
	$(GO) run golang.org/x/perf/cmd/benchstat@latest -col /impl bench/core.txt

# AWS transport against the SNS/SQS emulator: batched+concurrent consumer vs a
# one-by-one receive/delete loop and watermill-aws; PublishBatch vs Publish.
bench-aws:
	scripts/emulator.sh up
	@mkdir -p bench
	$(GO) test -run '^$$' -bench . -benchtime 2000x -count 3 ./transport/aws/ | tee bench/aws.txt

# Every benchmark once: proves they still run (CI runs this after the tests).
bench-smoke: services
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

# Postgres transport vs watermill-sql, same database, same run.
bench-postgres: services
	@mkdir -p bench
	$(GO) test -run '^$$' -bench . -benchtime 3000x -count 3 ./transport/postgres/ | tee bench/postgres.txt

# Per-message cost of the default middleware stack vs none vs the Watermill
# equivalent; the Postgres inbox's cost inside the handler's transaction.
bench-middleware: services
	@mkdir -p bench
	$(GO) test -run '^$$' -bench 'Handle|Chain' -benchmem -count 5 ./middleware/ | tee bench/middleware.txt
	$(GO) test -run '^$$' -bench . -benchmem ./middleware/inbox/pgstore/ | tee bench/inbox.txt

# The outbox vs the stock Watermill outbox (watermill-sql + forwarder): write
# path, relay into a no-op sink and into SNS on the emulator, claim cost.
bench-outbox: services
	$(GO) run ./cmd/outboxbench -dsn postgres://postgres@127.0.0.1:5432/test \
		-phases write,relay,sns,claim -duration 10s -drain 20000 -claimrows 1000000 -sns-events 10000

# The orders flow end to end (POST /orders -> outbox -> SNS -> SQS -> handlers
# -> final state), eda vs the same flow from stock Watermill components, at
# rising open-loop offered rates (50..1200/s, the default -rates); prints the
# side-by-side table (~12 min).
# Details and recorded runs: cmd/e2ebench/RESULTS.md.
bench-e2e:
	scripts/postgres.sh
	scripts/emulator.sh up
	@mkdir -p bench
	$(GO) run ./cmd/e2ebench -step 15s -drain 30s | tee bench/e2e.txt

# The same, short (~1 min): CI runs it to keep the benchmark working.
bench-e2e-short:
	scripts/postgres.sh
	scripts/emulator.sh up
	$(GO) run ./cmd/e2ebench -rates 25,50 -step 5s -drain 20s -p99-bound 2s

# Every fuzz target for FUZZTIME each, one after the other (the seed corpora
# in testdata/fuzz and the f.Add seeds also run in `make test`). A crasher is
# written to the package's testdata/fuzz/FuzzXxx/: fix it and commit it.
FUZZTIME ?= 30s
FUZZ_TARGETS = \
	./outbox:FuzzParseMetadata ./outbox:FuzzMarshalMetadata \
	./transport/aws:FuzzDecodeSQS ./transport/aws:FuzzEncodeSQS \
	./transport/postgres:FuzzDecodeMetadata ./transport/postgres:FuzzEncodeMetadata \
	./eda:FuzzEnvelope ./eda:FuzzDispatch \
	./cmd/edactl:FuzzTopologyFile ./cmd/edactl:FuzzFilterPolicy \
	./examples/orders:FuzzDecodeOrder
fuzz:
	@start=$$(date +%s); failed=; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$fn ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg || failed="$$failed $$fn"; \
	done; echo "fuzzed $(words $(FUZZ_TARGETS)) targets in $$(( $$(date +%s) - start ))s"; \
	if [ -n "$$failed" ]; then echo "crashers (see testdata/fuzz):$$failed"; exit 1; fi

# The fault harness (cmd/chaos): the orders example as 6 processes on
# Postgres and its own emulator, faults on a seeded schedule, a checker of
# the final state. CHAOS_SEED reproduces a run; CHAOS_FLAGS adds flags.
CHAOS_ORDERS ?= 100000
CHAOS_SEED ?= 0
.PHONY: chaos chaos-short
chaos: services
	$(GO) run ./cmd/chaos -orders $(CHAOS_ORDERS) -seed $(CHAOS_SEED) -drain 10m -results cmd/chaos/results-full.md $(CHAOS_FLAGS)

# The same harness for a few thousand orders (CI): a few minutes.
chaos-short: services
	$(GO) run ./cmd/chaos -orders 3000 -seed $(CHAOS_SEED) -drain 3m -timeout 15m $(CHAOS_FLAGS)
