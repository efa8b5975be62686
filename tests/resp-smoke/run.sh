#!/usr/bin/env bash
# The RESP smoke: real Redis tools against a three-region Meridian cluster
# on 127.0.0.1 (what .ci/run runs; runs alone too):
#
#   bash tests/resp-smoke/run.sh target/debug/meridian
#
#   1. session.sh         redis-cli sessions compared with transcripts
#   2. bench.sh           redis-benchmark -t ping,set,get,incr,sadd,spop,mset,hset
#                         -n 2000 -c 10, every reply a success
#   3. test_redis_py.py   redis-py (RESP3): convergence, hashes, quorum reads,
#                         SCAN/SSCAN iterators (and redis-cli --scan), a
#                         quorum write with two nodes down
#
# A step whose tool is missing (redis-cli/redis-benchmark: Debian
# redis-tools; redis-py 5 or newer for RESP3) prints "SKIP: <reason>" on
# stderr and the others still run; a step that runs and fails makes the
# script exit non-zero (after the other steps ran). Environment:
#   RESP_SMOKE_PORT   first port of the cluster (default 23700; it uses 12)
#   PYTHON            the Python interpreter (default python3)
#   SMOKE_SKIPS       a file to append each skip reason to (one a line)
#   SMOKE_RESULTS     a file to append each step's result line to
# The nodes are started in the background, their PIDs kept in the
# cluster directory, and stopped by PID when the script exits.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ $# -eq 1 ] || { echo "usage: $0 MERIDIAN-BINARY" >&2; exit 2; }
meridian="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
[ -x "$meridian" ] || { echo "run.sh: $1 is not an executable" >&2; exit 2; }
port="${RESP_SMOKE_PORT:-23700}"
python="${PYTHON:-python3}"
started=$SECONDS

skips=() results=() failed=0
skip() {
  echo "SKIP: $*" >&2
  skips+=("$*")
  [ -z "${SMOKE_SKIPS:-}" ] || echo "$*" >>"$SMOKE_SKIPS"
}
result() {
  results+=("$*")
  [ -z "${SMOKE_RESULTS:-}" ] || echo "$*" >>"$SMOKE_RESULTS"
}

# What can run here.
have() { command -v "$1" >/dev/null 2>&1; }
can_session=1 can_bench=1 can_python=1
if ! have redis-cli; then
  skip "RESP smoke: redis-cli session: redis-cli is not installed (Debian package redis-tools)"
  can_session=0
fi
if ! have redis-benchmark || ! have redis-cli; then
  skip "RESP smoke: redis-benchmark: redis-benchmark/redis-cli not installed (Debian package redis-tools)"
  can_bench=0
fi
if ! have "$python"; then
  skip "RESP smoke: redis-py test: $python is not installed"
  can_python=0
elif ! pyver="$("$python" -c 'import redis; print(redis.__version__)' 2>/dev/null)"; then
  skip "RESP smoke: redis-py test: Python's redis package is not installed (pip install 'redis>=5')"
  can_python=0
elif ! "$python" -c 'import re, redis, sys; sys.exit(tuple(map(int, re.findall(r"\d+", redis.__version__)[:2])) < (5, 0))'; then
  skip "RESP smoke: redis-py test: redis-py $pyver has no RESP3 (protocol=3 needs 5.0 or newer)"
  can_python=0
fi
if [ $((can_session + can_bench + can_python)) -eq 0 ]; then
  echo "RESP smoke: nothing could run here (skipped: ${#skips[@]})"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/resp-smoke.XXXXXX")"
dir="$work/cluster"
mkdir -p "$dir"
cleanup() {
  local rc=$?
  bash "$here/cluster.sh" stop "$dir" || true
  if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
    for log in "$dir"/*.log; do
      [ -f "$log" ] || continue
      echo "--- last lines of $(basename "$log")"
      tail -n 15 "$log"
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== RESP smoke: a three-region cluster on 127.0.0.1, ports $port-$((port + 11))"
bash "$here/cluster.sh" up "$meridian" "$dir" "$port"
echo "cluster up in $((SECONDS - started)) s"

# step NAME TIMEOUT COMMAND...: runs it, records PASS/FAIL with its time.
step() {
  local name="$1" limit="$2" t0=$SECONDS rc=0
  shift 2
  echo "== RESP smoke: $name"
  timeout "$limit" "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    result "PASS: $name ($((SECONDS - t0)) s)"
  else
    [ "$rc" -ne 124 ] || echo "RESP smoke: $name: timed out after $limit s"
    result "FAIL: $name (exit status $rc, $((SECONDS - t0)) s)"
    failed=$((failed + 1))
  fi
}

[ "$can_session" = 0 ] || step "redis-cli sessions" 60 bash "$here/session.sh" "$dir"
[ "$can_bench" = 0 ] || step "redis-benchmark" 120 bash "$here/bench.sh" "$dir" us-east-1
[ "$can_python" = 0 ] || step "redis-py (RESP3) on three nodes" 150 "$python" "$here/test_redis_py.py" "$meridian" "$dir"

echo "== RESP smoke summary ($((SECONDS - started)) s)"
for r in "${results[@]}"; do echo "  $r"; done
for s in "${skips[@]}"; do echo "  SKIP: $s"; done
[ "$failed" -eq 0 ]
