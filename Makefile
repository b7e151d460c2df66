SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

# State dir of scripts/services.sh (binaries, data, logs, pids, env file).
export DLOCK_SERVICES_DIR ?= /tmp/dlock-services

GO ?= go
TEST_TIMEOUT ?= 12m

.PHONY: services-up services-down services-status test lint bench bench-peers bench-scale safety

services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down

services-status:
	scripts/services.sh status

# Start the shared test servers, export their addresses (DLOCK_TEST_REDIS,
# DLOCK_TEST_ETCD, DLOCK_TEST_ZK, DLOCK_*_BIN, ...) and run all tests.
test: services-up
	set -a; . "$(DLOCK_SERVICES_DIR)/env"; set +a; \
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

lint:
	@out="$$(gofmt -l .)"; \
	if [[ -n "$$out" ]]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The Go benchmarks of every package: each driver's BenchmarkDriver (dlock's
# scenarios, drivertest.RunBenchmarks) and the benchmarks only it has (its
# engine's floor, its peer library). Narrow them with BENCH (a -bench regexp)
# and BENCHTIME, e.g. make bench BENCH=Driver/Handoff BENCHTIME=100x.
BENCH ?= .
BENCHTIME ?= 1s
bench: services-up
	set -a; . "$(DLOCK_SERVICES_DIR)/env"; set +a; \
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem ./...

# dlock against redsync, bsm/redislock, etcd's concurrency.Mutex and
# go-zookeeper's Lock, side by side, on the shared servers and on single-node
# ones it starts; RW lock, semaphore, etcd election failover and scale;
# rewrites docs/BENCHMARKS.md (estimated ~12 min on a quiet 2-core machine;
# 20 min measured at load average 17-39 before scale and failover left the
# single-node setup).
# PEERBENCH_FLAGS go to bench/run.sh, e.g. "-runs 1 -quick -out /tmp/b.md"
# for a quick look that leaves docs/ alone.
PEERBENCH_FLAGS ?=
bench-peers: services-up
	bench/run.sh $(PEERBENCH_FLAGS)

# The scale scenario alone (10,000 locks held by one client per engine, on
# the shared and the single-node servers), one run, written to
# $(SCALE_OUT) rather than docs/.
SCALE_OUT ?= /tmp/dlock-bench-scale.md
bench-scale: services-up
	bench/run.sh -scenarios scale -runs 1 -single-slow -out $(SCALE_OUT) -json $(SCALE_OUT).json $(PEERBENCH_FLAGS)

# The whole fault-injection suite (the short form runs inside make test).
safety: services-up
	set -a; . "$(DLOCK_SERVICES_DIR)/env"; set +a; \
	$(GO) test -race -count=1 -timeout 45m ./safety/ -args -safety.full
