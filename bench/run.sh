#!/usr/bin/env bash
# Runs the peer benchmarks (dlock's drivers against redsync, bsm/redislock,
# etcd's concurrency.Mutex, go-zookeeper's Lock and each engine's raw round
# trips) against the shared test servers and rewrites docs/BENCHMARKS.md.
# The Makefile's bench-peers target calls this.
#
#   bench/run.sh                                  full run: 5 interleaved runs, < 10 minutes
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
