#!/usr/bin/env bash
# redis-benchmark against one node of a running smoke cluster, every reply
# a success:
#
#   bench.sh DIR [NODE]     DIR: a cluster started by cluster.sh up
#                           NODE: default us-east-1
#   BENCH_TESTS             default ping,set,get,incr,sadd,spop,mset,hset
#   BENCH_REQUESTS          default 2000 (per test); BENCH_CLIENTS default 10
#
# redis-benchmark counts an error reply as a completed request, so its
# figures alone prove nothing. Success is checked four ways:
#   1. redis-benchmark 7.x stops at the first error reply ("Error from
#      server: ...", exit status 1): the exit status must be 0 and no line
#      may mention an error (older versions print errors with -e and go on);
#   2. the node's INFO stats: total_commands_processed grew by at least
#      requests × commands (every request arrived and was answered);
#   3. the node's metrics: no coordinator request failed
#      (meridian_requests_total{outcome="error"} unchanged);
#   4. the data: without -r every request hits the same key, so the INCR
#      test leaves counter:__rand_int__ at exactly BENCH_REQUESTS (a failed
#      INCR would be missing), SET/MSET leave key:__rand_int__ holding a
#      value of -d 3 bytes, SPOP after SADD leaves myset empty, and HSET
#      leaves myhash with its one field (element:__rand_int__) holding a
#      value of 3 bytes.
# Needs redis-benchmark and redis-cli (Debian redis-tools).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$1"
node="${2:-us-east-1}"
tests="${BENCH_TESTS:-ping,set,get,incr,sadd,spop,mset,hset}"
requests="${BENCH_REQUESTS:-2000}"
clients="${BENCH_CLIENTS:-10}"
cluster() { bash "$here/cluster.sh" "$@"; }
token="$(cluster token "$dir")"
port="$(cluster resp-port "$dir" "$node")"
cli() { timeout 10 redis-cli -p "$port" --user local --pass "$token" --no-auth-warning "$@"; }
fail() { echo "redis-benchmark: FAILED: $*" >&2; exit 1; }
errors() { cluster metrics "$dir" "$node" | awk '/^meridian_requests_total\{.*outcome="error"/ { s += $2 } END { print s + 0 }'; }
processed() { cli INFO stats | tr -d '\r' | sed -n 's/^total_commands_processed://p'; }

# The keys redis-benchmark uses without -r; start from none of them.
cli DEL key:__rand_int__ counter:__rand_int__ myset myhash >/dev/null
errors_before="$(errors)"
processed_before="$(processed)"

out="$(mktemp "${TMPDIR:-/tmp}/resp-bench.XXXXXX")"
trap 'rm -f "$out"' EXIT
rc=0
started=$SECONDS
timeout 90 redis-benchmark -h 127.0.0.1 -p "$port" --user local -a "$token" \
  -t "$tests" -n "$requests" -c "$clients" -d 3 --csv >"$out" 2>&1 || rc=$?
took=$((SECONDS - started))
cat "$out"
[ "$rc" -eq 0 ] || fail "redis-benchmark exited with status $rc"
if grep -i -q 'error' "$out"; then fail "error replies (above)"; fi

# Each test name of -t runs one command, except ping: PING_INLINE and PING_MBULK.
IFS=, read -ra names <<<"$tests"
commands=$((${#names[@]} + 1))
[[ ",$tests," == *,ping,* ]] || commands=${#names[@]}
grew=$(($(processed) - processed_before))
[ "$grew" -ge $((requests * commands)) ] ||
  fail "INFO stats: total_commands_processed grew by $grew, expected at least $((requests * commands))"
errors_after="$(errors)"
[ "$errors_after" = "$errors_before" ] ||
  fail "metrics: meridian_requests_total{outcome=\"error\"} went from $errors_before to $errors_after"
checks=3
if [[ ",$tests," == *,incr,* ]]; then
  got="$(cli GET counter:__rand_int__)"
  [ "$got" = "$requests" ] || fail "after $requests INCRs, counter:__rand_int__ is '$got'"
  checks=$((checks + 1))
fi
if [[ ",$tests," == *,set,* || ",$tests," == *,mset,* ]]; then
  got="$(cli STRLEN key:__rand_int__)"
  [ "$got" = 3 ] || fail "after SET/MSET of 3-byte values, STRLEN key:__rand_int__ is '$got'"
  checks=$((checks + 1))
fi
if [[ ",$tests," == *,hset,* ]]; then
  got="$(cli HLEN myhash) $(cli HSTRLEN myhash element:__rand_int__)"
  [ "$got" = "1 3" ] || fail "after $requests HSETs of one field, HLEN and HSTRLEN of myhash are '$got'"
  checks=$((checks + 1))
fi
if [[ ",$tests," == *,spop,* ]]; then
  got="$(cli SCARD myset)"
  [ "$got" = 0 ] || fail "after SADD then $requests SPOPs, myset has $got members"
  checks=$((checks + 1))
fi
cli DEL key:__rand_int__ counter:__rand_int__ myset myhash >/dev/null
echo "redis-benchmark: ok: $tests × $requests requests, $clients clients, ${took}s; $grew commands processed, no error reply, $checks checks"
