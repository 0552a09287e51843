# The README's test command is `make test`; .ci/run calls it.
GO ?= go

.PHONY: test vet bench
test: vet
	$(GO) test -race -count=1 -timeout 15m ./...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 6 ./eda/ ./transport/memory/ | tee bench/core.txt
