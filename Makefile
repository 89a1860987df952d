# roster's developer commands. `make run` and `make test` set everything up
# on a fresh machine: a throwaway PostgreSQL in ./var/pg (unless
# DATABASE_URL is set), the binary, the fixtures.

SHELL := /bin/bash
GO ?= go
DB = $(shell scripts/pg.sh start)

.PHONY: build run test test-long bench fuzz db db-stop fixtures vet clean

build:
	$(GO) build -o bin/roster ./cmd/roster

# The main job on the embedded defaults: local PostgreSQL, a demo tenant,
# the fixture files through the whole pipeline, and a summary.
run: build
	@url=$$(scripts/pg.sh start) && DATABASE_URL=$$url ./bin/roster demo

test:
	@url=$$(scripts/pg.sh start) && DATABASE_URL=$$url $(GO) test -count=1 -timeout 30m ./...

# The long campaigns: 100 crash trials on a 100k-row file.
test-long:
	@url=$$(scripts/pg.sh start) && DATABASE_URL=$$url ROSTER_CRASH_TRIALS=100 ROSTER_CRASH_ROWS=100000 \
		$(GO) test -count=1 -timeout 6h -run TestCrashCampaign -v ./cmd/roster

# Performance against a hand-written SQL baseline measured in the same run
# (medians, ratios, targets); writes var/bench/results.json. Scale with
# ROSTER_BENCH_ROWS (default 100000,1000000), ROSTER_BENCH_REPS (5),
# ROSTER_BENCH_SFTP_MB (1024), ROSTER_BENCH_TENANTS (1000).
bench:
	@url=$$(scripts/pg.sh start) && DATABASE_URL=$$url ROSTER_BENCH=1 $(GO) test -count=1 -timeout 3h -run '^TestBench$$' -v ./cmd/roster | grep -v '^=== RUN'
	@url=$$(scripts/pg.sh start) && DATABASE_URL=$$url $(GO) test -count=1 -run XXX -bench . -benchmem ./stages/...

# Every fuzz target for FUZZTIME each (go test runs one -fuzz target at a time).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run XXX -fuzz '^FuzzParseNormalizeValidate$$' -fuzztime $(FUZZTIME) ./stages/parse
	$(GO) test -run XXX -fuzz '^FuzzCSVReader$$' -fuzztime $(FUZZTIME) ./stages/parse
	$(GO) test -run XXX -fuzz '^FuzzParseDate$$' -fuzztime $(FUZZTIME) ./schemas
	$(GO) test -run XXX -fuzz '^FuzzDecrypt$$' -fuzztime $(FUZZTIME) ./stages/decrypt
	$(GO) test -run XXX -fuzz '^FuzzResolve$$' -fuzztime $(FUZZTIME) ./sftpd

vet:
	$(GO) vet ./...

db:
	@scripts/pg.sh start

db-stop:
	@scripts/pg.sh stop

# Regenerate the deterministic fixture files.
fixtures:
	$(GO) run ./fixtures/gen -kind departments > fixtures/departments.csv
	$(GO) run ./fixtures/gen -kind users -rows 1000 -seed 1 > fixtures/users.csv

clean:
	rm -rf bin
