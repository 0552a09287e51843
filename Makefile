# The README's test command is `make test`; .ci/run calls it.
GO ?= go

.PHONY: test services vet bench bench-aws
test: services vet
	$(GO) test -race -count=1 -timeout 20m ./...

# The real servers the tests talk to: PostgreSQL and the SNS/SQS emulator.
services:
	scripts/postgres.sh
	scripts/emulator.sh up

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

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
