#!/usr/bin/env bash
# RESP redis-benchmark A/B: one node per build (periodic 1000 ms, RESP user
# `local`), node on CPU 1, redis-benchmark on CPU 0, rounds interleaved.
# Usage: ROUNDS=5 TESTS="set incr" benches/ab-resp.sh NAME=BINDIR ...
# (each BINDIR holds a release `meridian`; needs redis-benchmark, taskset)
set -uo pipefail
ROUNDS=${ROUNDS:-5}; TESTS=${TESTS:-"set"}; N=${N:-100000}; C=${C:-50}
out=${OUT:-$(mktemp -d /tmp/ab-resp.XXXXXX)}; mkdir -p "$out"
names=(); ports=(); pids=(); toks=()
base=28000
for spec in "$@"; do
  name=${spec%%=*}; bin=${spec#*=}/meridian
  d=$out/$name; mkdir -p "$d"
  "$bin" init --dir "$d/c" --regions a --base-port $base >/dev/null || exit 1
  toml="$d/c/a-1.toml"
  sed -i -E -e 's/^durability = "[a-z]+"/durability = "periodic"/' -e 's/^periodic_ms = [0-9]+/periodic_ms = 1000/' "$toml"
  port="$(sed -n 's/^resp_listen = "[^"]*:\([0-9]*\)".*/\1/p' "$toml")"
  [ -n "$port" ] || { echo "no resp_listen in $toml"; exit 1; }
  taskset -c 1 nice -n -10 "$bin" serve --config "$toml" >"$d/node.log" 2>&1 &
  tok="$(sed -n 's/^token = "\(.*\)"/\1/p' "$d/c/client.toml")"
  pids+=($!); names+=("$name"); ports+=("$port"); toks+=("$tok")
  base=$((base+100))
done
trap 'kill ${pids[*]} 2>/dev/null' EXIT
sleep 4
for t in $TESTS; do
  for ((r=1; r<=ROUNDS; r++)); do
    for i in "${!names[@]}"; do
      rate=$(timeout 120 taskset -c 0 nice -n -10 redis-benchmark -p "${ports[$i]}" --user local -a "${toks[$i]}" -c "$C" -n "$N" -d 100 -r 1000000 -t "$t" -q 2>&1 | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
      echo "$t r$r ${names[$i]} ${rate:-ERR}" | tee -a "$out/results.txt"
    done
  done
done
python3 - "$out/results.txt" <<'PY'
import sys,statistics,collections
d=collections.defaultdict(list)
for l in open(sys.argv[1]):
  t,r,n,v=l.split()
  if v!='ERR': d[(t,n)].append(float(v))
for k,v in sorted(d.items()): print(k, 'median', round(statistics.median(v)), 'n', len(v), [round(x) for x in v])
PY
