#!/usr/bin/env bash
# The full matrix of the partition-testing harness: every workload x every
# nemesis x every network backend x 3 and 5 nodes, one run each, one after
# the other, and a Markdown results table (jepsen/README.md, "Full matrix").
#
#   jepsen/matrix.sh                       # everything (see the estimate it prints)
#   WORKLOADS="large" NEMESES="outage partition" NETS=proxy NODES=3 jepsen/matrix.sh
#   TIME=20 SEED=100 OUT=store/matrix BIN=target/debug jepsen/matrix.sh
#
# Environment (defaults in brackets):
#   WORKLOADS  [counter set register all large]; also map and expiry
#              (or all+expiry), which are not in the default list
#   NEMESES    [none partition kill pause clock all outage]
#   NETS       [nft proxy]   nft needs root + nft + iptables; otherwise those
#                            rows are recorded as SKIP with the reason
#   NODES      [3 5]
#   TIME       [30]          seconds of each run's main phase (--time-limit)
#   RATE       [200]         --rate for every workload but large
#   LARGE_RATE [20]          --rate for the large workload (ops move up to 1 MiB)
#   SEED       [1]           run i (from 0, in table order) uses seed SEED+i
#   BIN        [target/release, else target/debug, or $CARGO_TARGET_DIR/...]
#   OUT        [store/matrix] runs go to OUT/store, the table to OUT/results.md
#   EXTRA      []            more flags for every run
#
# Time bound. Each run takes its main phase plus set-up and the final phase
# (heal, scripted scenarios, convergence wait, at least 10 s quiescence,
# final reads, checking): about TIME + 40 s, up to TIME + 90 s with clock
# skews (the final wait outlasts the largest skew) or a large workload
# (18 MiB of merge adds and full final reads). Every run is killed after
# TIME + PER_RUN_SLACK (240 s) at most (recorded as "timeout"). The full
# default matrix is 5 x 7 x 2 x 2 = 140 runs: about 140 x 80 s = 3.1 h
# expected, 140 x 270 s = 10.5 h at the hard bound. The script prints its
# own estimate before it starts.
#
# Exit status: 0 if every run that ran was valid, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

WORKLOADS=${WORKLOADS:-counter set register all large}
NEMESES=${NEMESES:-none partition kill pause clock all outage}
NETS=${NETS:-nft proxy}
NODES=${NODES:-3 5}
TIME=${TIME:-30}
RATE=${RATE:-200}
LARGE_RATE=${LARGE_RATE:-20}
SEED=${SEED:-1}
OUT=${OUT:-store/matrix}
EXTRA=${EXTRA:-}
PER_RUN_SLACK=240
EXPECTED_OVERHEAD=50

if [ -z "${BIN:-}" ]; then
  t="${CARGO_TARGET_DIR:-target}"
  if [ -x "$t/release/meridian-jepsen" ]; then BIN="$t/release"; else BIN="$t/debug"; fi
fi
J="$BIN/meridian-jepsen"
if [ ! -x "$J" ] || [ ! -x "$BIN/meridian" ]; then
  echo "no $J or $BIN/meridian: cargo build --release -p meridian-cli -p meridian-jepsen" >&2
  exit 254
fi

read -ra ws <<<"$WORKLOADS"
read -ra ns <<<"$NEMESES"
read -ra nets <<<"$NETS"
read -ra sizes <<<"$NODES"
total=$((${#ws[@]} * ${#ns[@]} * ${#nets[@]} * ${#sizes[@]}))
echo "matrix: $total runs of ${TIME}s; expected about $((total * (TIME + EXPECTED_OVERHEAD) / 60)) min," \
  "at most $((total * (TIME + PER_RUN_SLACK) / 60)) min; binaries from $BIN"

mkdir -p "$OUT"
table="$OUT/results.md"
{
  echo "| test | nodes | net | seed | ops | ok/fail/info | verdict | converged after (ms) | full syncs received | notes |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} >"$table"

# One table row from a run's directory (test.json + results.json).
row() {
  python3 - "$1" <<'EOF'
import json, sys, os
d = sys.argv[1]
t = json.load(open(os.path.join(d, "test.json")))
r = json.load(open(os.path.join(d, "results.json")))
st = r.get("stats", {})
conv = (t.get("convergence") or {}).get("converged_after_ms")
fs = t.get("full-syncs-received") or {}
fs_total = sum(v for v in fs.values() if isinstance(v, int))
notes = []
lg = r.get("large")
if isinstance(lg, dict):
    m = lg.get("merge", {})
    if m.get("ran"):
        notes.append("merge %s MiB acked, past limit: %s, merge %s" % (
            round(m.get("acknowledged-bytes", 0) / 2**20, 1), m.get("past-object-limit"), m.get("valid")))
    notes.append("corrupt reads %s" % lg.get("corrupt-reads-count"))
bad = [k for k, v in r.items() if isinstance(v, dict) and v.get("valid") is not True]
if bad:
    notes.append("not valid: " + ", ".join(bad))
v = r.get("valid")
print("| %s | %d | %s | %s | %s | %s/%s/%s | %s | %s | %s | %s |" % (
    t["name"], len(t["nodes"]), t["net"], t["seed"], st.get("count", "?"),
    st.get("ok-count", "?"), st.get("fail-count", "?"), st.get("info-count", "?"),
    {True: "valid", False: "**invalid**"}.get(v, v), conv if conv is not None else "-",
    fs_total if fs else "-", "; ".join(notes)))
EOF
}

i=0
failed=0
for w in "${ws[@]}"; do
  for n in "${ns[@]}"; do
    for size in "${sizes[@]}"; do
      for net in "${nets[@]}"; do
        seed=$((SEED + i))
        i=$((i + 1))
        rate=$RATE
        [ "$w" = large ] && rate=$LARGE_RATE
        store="$OUT/store"
        log="$OUT/$w-$n-$size-$net-$seed.log"
        echo "[$i/$total] $w x $n, $size nodes, $net, seed $seed"
        rc=0
        # shellcheck disable=SC2086
        timeout --kill-after=30 $((TIME + PER_RUN_SLACK)) \
          "$J" test --workload "$w" --nemesis "$n" --nodes "$size" --net "$net" \
          --time-limit "$TIME" --rate "$rate" --seed "$seed" --store "$store" \
          --skip-if-unavailable $EXTRA >"$log" 2>&1 || rc=$?
        if grep -q '^SKIP: ' "$log"; then
          reason=$(sed -n 's/^SKIP: //p' "$log" | head -n 1)
          echo "| $w-$n | $size | $net | $seed | - | - | SKIP | - | - | $reason |" >>"$table"
          continue
        fi
        dir=$(sed -n 's/.*storing in \(.*\)$/\1/p' "$log" | head -n 1)
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
          echo "| $w-$n | $size | $net | $seed | - | - | **timeout** | - | - | killed after $((TIME + PER_RUN_SLACK)) s; log $log |" >>"$table"
          failed=1
        elif [ -n "$dir" ] && [ -f "$dir/results.json" ] && [ -f "$dir/test.json" ]; then
          row "$dir" >>"$table" || echo "| $w-$n | $size | $net | $seed | - | - | exit $rc | - | - | unreadable results in $dir |" >>"$table"
          [ "$rc" = 0 ] || failed=1
        else
          echo "| $w-$n | $size | $net | $seed | - | - | **error (exit $rc)** | - | - | log $log |" >>"$table"
          failed=1
        fi
        tail -n 1 "$table"
      done
    done
  done
done
echo "table: $table"
exit "$failed"
