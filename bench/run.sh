#!/usr/bin/env bash
# Runs the peer benchmarks (dlock's drivers against redsync, bsm/redislock,
# etcd's concurrency.Mutex and concurrency.Election, go-zookeeper's Lock and
# each engine's raw round trips) against the shared test servers and against
# a single-node Redis, etcd and ZooKeeper it starts, then the RW lock,
# semaphore and scale scenarios, and rewrites docs/BENCHMARKS.md. The
# Makefile's bench-peers and bench-scale targets call this.
#
#   bench/run.sh                                  full run: 5 interleaved runs, about 12 minutes on a quiet 2-core machine (estimate)
#   bench/run.sh -runs 1 -quick -out /tmp/b.md    a quick look, leaving docs/ alone
#
# Extra arguments go to peerbench after the defaults, so they override them
# (see `go run ./cmd/peerbench -h` in bench/). The commentary on the figures
# is hand-written in docs/BENCHMARKS-NOTES.md, not generated.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DLOCK_SERVICES_DIR="${DLOCK_SERVICES_DIR:-/tmp/dlock-services}"

"$ROOT/scripts/services.sh" up >&2
set -a
# shellcheck disable=SC1091
. "$DLOCK_SERVICES_DIR/env"
set +a

cd "$ROOT/bench"
bin="$(mktemp -d)/peerbench"
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./cmd/peerbench

"$bin" -runs 5 -out "$ROOT/docs/BENCHMARKS.md" -json "$ROOT/bench/last-run.json" \
	-command "bench/run.sh $*" "$@"
