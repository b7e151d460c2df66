#!/usr/bin/env bash
# Runs the peer benchmarks (issue 7) against the shared test servers and
# rewrites docs/BENCHMARKS.md. The Makefile's bench-peers target calls this.
#
#   bench/run.sh                  full run: 5 interleaved runs, < 10 minutes
#   bench/run.sh -runs 1 -quick   a quick look while developing
#
# Extra arguments go to peerbench (see `go run ./cmd/peerbench -h` in bench/).
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

out="$ROOT/docs/BENCHMARKS.md"
"$bin" -runs 5 -out "$out" -json "$ROOT/bench/last-run.json" -notes "$ROOT/bench/NOTES.md" \
	-command "bench/run.sh $*" "$@"
echo "wrote $out" >&2
