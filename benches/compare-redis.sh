#!/usr/bin/env bash
# Meridian vs Redis on the same machine: every row of issue 14's targets in
# one table, each Meridian figure next to Redis's, measured in the same run.
#
# Rows (ROWS selects them; all by default):
#   resp         redis-benchmark against both, -c 50: SET, GET, INCR, SADD,
#                unpipelined (target >= 0.8x) and -P 16 (>= 0.5x); Meridian
#                one node, durability "periodic" (PERIODIC_MS, 1000) and RESP
#                user `local`, vs redis-server --appendfsync everysec
#   durable      the same, SET and INCR, Meridian "sync" vs appendfsync
#                always (>= 1.0x), and the node's writes per fsync from its
#                own counters (>= 20)
#   replicating  SET -c 50 against one node of a three-node cluster (all on
#                this machine, all "periodic") vs a Redis primary with two
#                replicas (--replicaof, everysec) (>= 0.6x)
#   native       `meridian bench compare` (the QUIC client, CLIENTS clients,
#                16 and 64 by default): periodic vs everysec (>= 0.6x) and
#                sync vs always (reported)
#   large        redis-benchmark SET of 10 KB and 1 MB values, 16 clients,
#                periodic vs everysec (>= 0.6x)
#   memory       KEYS SETs of distinct 16-byte keys with 100-byte values
#                (redis-cli --pipe); the node's RSS (VmRSS) and data
#                directory (du) vs Redis's used_memory_rss and AOF directory,
#                per key (<= 2x each)
# Every row: 16-byte keys, 100-byte values unless said, a 1M-key space
# (KEYSPACE), A/B rounds interleaved (Meridian then Redis, ROUNDS times),
# medians; both servers pinned to SERVER_CPU, the load generator to
# CLIENT_CPU (taskset, when there are >= 2 CPUs).
#
# Every Meridian reply must be a success: redis-benchmark counts an error
# reply as a completed request, so each run is checked (exit status, no
# error line, the node's meridian_requests_total{outcome="error"} unchanged,
# INFO stats total_commands_processed grown by the request count; Redis:
# exit status and total_error_replies). A run that fails a check, or times
# out (TIMEOUT seconds per run), gives no figure: the table says so and the
# script exits 1 after printing it.
#
# It installs nothing: if redis-server, redis-benchmark, redis-cli or the
# meridian binary is missing it says so and exits 2. Everything runs on
# 127.0.0.1 in a temporary directory, removed on exit; it stops exactly the
# processes it started (by PID). Settings: see benches/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

MERIDIAN="${MERIDIAN:-${CARGO_TARGET_DIR:-$repo/target}/release/meridian}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
REDIS_BENCHMARK="${REDIS_BENCHMARK:-redis-benchmark}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"
ROWS="${ROWS:-resp,durable,replicating,native,large,memory}"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-1s}"
CLIENTS="${CLIENTS:-16,64}"
KEYSPACE="${KEYSPACE:-1000000}"
SADD_KEYSPACE="${SADD_KEYSPACE:-100000}"
PERIODIC_MS="${PERIODIC_MS:-1000}"
RESP_CLIENTS="${RESP_CLIENTS:-50}"
PIPELINE="${PIPELINE:-16}"
LARGE_CLIENTS="${LARGE_CLIENTS:-16}"
REDIS_PORT="${REDIS_PORT:-6390}"
MERIDIAN_BASE_PORT="${MERIDIAN_BASE_PORT:-7300}"
SERVER_CPU="${SERVER_CPU:-1}"
CLIENT_CPU="${CLIENT_CPU:-0}"
REPLICA_CPU="${REPLICA_CPU:-$SERVER_CPU}"
PIN="${PIN:-auto}"
KEEP_JSON="${KEEP_JSON:-}"

# DURATION etc. in seconds ("5s", "500ms", "1m", "2").
secs_of() {
    awk -v d="$1" 'BEGIN {
        if (d ~ /ms$/) { sub(/ms$/, "", d); print d / 1000 }
        else if (d ~ /m$/) { sub(/m$/, "", d); print d * 60 }
        else { sub(/s$/, "", d); print d + 0 } }'
}
duration_s="$(secs_of "$DURATION")"
warmup_s="$(secs_of "$WARMUP")"

# Quick mode (a check that the script works, figures meaningless): on by
# default when DURATION is 1 s or less (what .ci/run passes); it shrinks
# every row's request counts, the memory row's KEYS and the timeouts.
if [ -z "${QUICK:-}" ]; then
    QUICK=$(awk -v d="$duration_s" 'BEGIN { print (d <= 1) ? 1 : 0 }')
fi
if [ "$QUICK" = 1 ]; then
    d_requests=1000 d_pipelined=4000 d_large=100 d_huge=8 d_keys=10000 d_timeout=30 d_settle=1
else
    d_requests=100000 d_pipelined=400000 d_large=5000 d_huge=100 d_keys=1000000 d_timeout=120 d_settle=2
fi
REQUESTS="${REQUESTS:-$d_requests}"                  # per redis-benchmark run, unpipelined
PIPELINED_REQUESTS="${PIPELINED_REQUESTS:-$d_pipelined}" # per run at -P $PIPELINE
LARGE_REQUESTS="${LARGE_REQUESTS:-$d_large}"        # per run of 10 KB SETs
HUGE_REQUESTS="${HUGE_REQUESTS:-$d_huge}"           # per run of 1 MB SETs
KEYS="${KEYS:-$d_keys}"                             # keys written by the memory row
TIMEOUT="${TIMEOUT:-$d_timeout}"                    # seconds, bound of every load run
FILL_TIMEOUT="${FILL_TIMEOUT:-$((4 * TIMEOUT))}"     # seconds, bound of the memory row's fill
SETTLE="${SETTLE:-$d_settle}"                       # seconds before the memory row measures

for v in ROUNDS KEYSPACE SADD_KEYSPACE PERIODIC_MS RESP_CLIENTS PIPELINE LARGE_CLIENTS REQUESTS \
    PIPELINED_REQUESTS LARGE_REQUESTS HUGE_REQUESTS KEYS TIMEOUT FILL_TIMEOUT SETTLE REDIS_PORT \
    MERIDIAN_BASE_PORT; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer (got '${!v}')" >&2; exit 2; }
done

# Bounds on waiting for a server to answer / to stop, in tenths of a second.
READY_TENTHS=150
STOP_TENTHS=100

# ---------------------------------------------------------------- tools ---
missing=0
need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "missing: $1 ($2)" >&2
        missing=1
    fi
}
need "$REDIS_SERVER" "Debian: apt-get install -y redis-server"
need "$REDIS_BENCHMARK" "Debian: apt-get install -y redis-tools"
need "$REDIS_CLI" "Debian: apt-get install -y redis-tools"
need timeout "coreutils"
need awk "Debian: apt-get install -y mawk"
if [ ! -x "$MERIDIAN" ]; then
    echo "missing: the meridian binary at $MERIDIAN. Build it: cargo build --release -p meridian-cli" >&2
    echo "         (or point MERIDIAN=/path/to/meridian at one)" >&2
    missing=1
fi
if [ "$missing" -ne 0 ]; then
    echo "compare-redis.sh installs nothing itself; install the above and run it again." >&2
    exit 2
fi

pin_server=()
pin_replica=()
pin_client=()
if [ "$PIN" != none ] && command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    pin_server=(taskset -c "$SERVER_CPU")
    pin_replica=(taskset -c "$REPLICA_CPU")
    pin_client=(taskset -c "$CLIENT_CPU")
    pinning="servers on CPU $SERVER_CPU, load generator on CPU $CLIENT_CPU"
    if [ "$REPLICA_CPU" = "$SERVER_CPU" ]; then
        pinning_repl="all three nodes / the primary and both replicas on CPU $SERVER_CPU, load generator on CPU $CLIENT_CPU"
    else
        pinning_repl="the loaded node / the primary on CPU $SERVER_CPU, the two other nodes / the replicas on CPU $REPLICA_CPU, load generator on CPU $CLIENT_CPU"
    fi
else
    pinning="unpinned"
    pinning_repl="unpinned"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/meridian-compare.XXXXXX")"
samples="$tmp/samples.tsv"   # KEY SIDE ROUND VALUE, one measurement a line
results="$tmp/results.tsv"   # one finished table row a line
notes="$tmp/notes.txt"       # what the table's rows mean, and side figures
: >"$samples"
: >"$results"
: >"$notes"
started=()
incomplete=0
after_run=""   # a function ab_round calls after each successful run

stop_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < STOP_TENTHS; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "pid $pid did not stop on SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

stop_all() {
    local i
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do
        stop_pid "${started[$i]}"
    done
    started=()
}

cleanup() {
    stop_all
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "compare-redis.sh: $*" >&2
    exit 1
}

note() { printf '%s\n' "$*" >>"$notes"; }

# ------------------------------------------------------------- servers ---
# A Redis server: redis_start PORT APPENDFSYNC [PRIMARY_PORT]. The first one
# started in a row is the one loaded ($r_port, $r_dir).
redis_start() {
    local port="$1" fsync="$2" primary="${3:-}" dir="$tmp/redis-$1" extra=() pin=("${pin_server[@]}")
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ -n "$primary" ]; then
        extra=(--replicaof 127.0.0.1 "$primary")
        pin=("${pin_replica[@]}")
    fi
    "${pin[@]}" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --dir "$dir" \
        --appendonly yes --appendfsync "$fsync" --save "" --daemonize no \
        --logfile "$dir/redis.log" "${extra[@]}" &
    local pid="$!" i
    started+=("$pid")
    if [ -z "$primary" ]; then
        r_port="$port"
        r_dir="$dir"
    fi
    # Ready when the answer comes from this process (not another server
    # already on the port).
    for ((i = 0; i < READY_TENTHS; i++)); do
        [ "$(redis_info "$port" server process_id)" = "$pid" ] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$dir/redis.log" >&2 || true
    die "redis-server (pid $pid) did not answer on 127.0.0.1:$port (its log is above)"
}

redis_info() { # PORT SECTION FIELD
    timeout 5 "$REDIS_CLI" -p "$1" INFO "$2" 2>/dev/null | tr -d '\r' | sed -n "s/^$3://p"
}

# A Meridian cluster: meridian_cluster NAME REGIONS BASE_PORT DURABILITY.
# Starts every node; the first (region order) is the loaded one: $m_node,
# $m_pid, $m_port (RESP), $m_metrics (HTTP), $m_data; $m_dir the cluster
# directory, $m_token its access token, $m_peer_metrics the other nodes'.
meridian_cluster() {
    local name="$1" regions="$2" base="$3" durability="$4" toml node addr i pid port
    local -a pin pids=()
    m_dir="$tmp/$name"
    m_node=""
    m_peer_metrics=()
    "$MERIDIAN" init --dir "$m_dir" --regions "$regions" --base-port "$base" >/dev/null
    m_token="$(sed -n 's/^token = "\(.*\)"/\1/p' "$m_dir/client.toml")"
    for toml in "$m_dir"/*.toml; do
        node="$(basename "$toml" .toml)"
        [ "$node" = client ] && continue
        sed -i -E \
            -e "s/^durability = \"[a-z]+\"/durability = \"$durability\"/" \
            -e "s/^periodic_ms = [0-9]+/periodic_ms = $PERIODIC_MS/" \
            "$toml"
        grep -q "^durability = \"$durability\"" "$toml" || die "could not set durability in $toml"
        addr="$(sed -n 's/^metrics_listen = "\([^"]*\)".*/\1/p' "$toml")"
        if [ -z "$m_node" ]; then
            pin=("${pin_server[@]}")
        else
            pin=("${pin_replica[@]}")
        fi
        "${pin[@]}" "$MERIDIAN" serve --config "$toml" >"$m_dir/$node.log" 2>&1 &
        started+=("$!")
        pids+=("$!")
        if [ -z "$m_node" ]; then
            m_node="$node"
            m_pid="$!"
            m_metrics="$addr"
            m_port="$(sed -n 's/^resp_listen = "[^"]*:\([0-9]*\)".*/\1/p' "$toml")"
            m_data="$m_dir/data/$node"
        else
            m_peer_metrics+=("$addr")
        fi
    done
    # Ready when each node's RESP port answers from that node's process.
    for toml in "$m_dir"/*.toml; do
        node="$(basename "$toml" .toml)"
        [ "$node" = client ] && continue
        pid="${pids[0]}"
        pids=("${pids[@]:1}")
        port="$(sed -n 's/^resp_listen = "[^"]*:\([0-9]*\)".*/\1/p' "$toml")"
        for ((i = 0; i < READY_TENTHS; i++)); do
            [ "$(m_cli_port "$port" INFO server | sed -n 's/^process_id://p')" = "$pid" ] && break
            kill -0 "$pid" 2>/dev/null || i="$READY_TENTHS"
            sleep 0.1
        done
        if [ "$i" -ge "$READY_TENTHS" ]; then
            tail -20 "$m_dir/$node.log" >&2 || true
            die "meridian node $node (pid $pid) did not answer on its RESP port $port (its log is above)"
        fi
        addr="$(sed -n 's/^metrics_listen = "\([^"]*\)".*/\1/p' "$toml")"
        [ "$(metric "$addr" meridian_uptime_seconds)" != NA ] ||
            die "meridian node $node: no metrics on $addr"
    done
}

m_cli_port() { # PORT ARGS...: redis-cli as RESP user `local`
    local port="$1"
    shift
    timeout 5 "$REDIS_CLI" -p "$port" --user local --pass "$m_token" --no-auth-warning "$@" 2>/dev/null | tr -d '\r'
}
m_cli() { m_cli_port "$m_port" "$@"; }

# The node's Prometheus exposition (GET /metrics over bash's /dev/tcp).
metrics_of() {
    local host="${1%:*}" port="${1##*:}"
    { exec 5<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 0
    printf 'GET /metrics HTTP/1.0\r\n\r\n' >&5
    timeout 5 cat <&5 | tr -d '\r' || true
    exec 5<&-
}

# metric ADDR NAME [LABEL-SUBSTRING]: the sum of NAME's samples (with the
# substring in their labels), or NA if the endpoint gave none (after a few
# tries: on a busy machine one scrape can fail).
metric() {
    local try v
    for try in 1 2 3 4 5; do
        v="$(metrics_of "$1" | awk -v name="$2" -v has="${3:-}" '
            /^#/ { next }
            ($1 == name || index($1, name "{") == 1) && (has == "" || index($1, has) > 0) { s += $2; n++ }
            END { if (n) printf "%.0f\n", s; else print "NA" }')"
        [ "$v" != NA ] && break
        sleep 0.2
    done
    echo "$v"
}

m_errors() { metric "$m_metrics" meridian_requests_total 'outcome="error"'; }

# ---------------------------------------------------------- one run ---
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$samples"; }

# rb_run meridian|redis N ARGS...: one redis-benchmark run (pinned, bounded
# by -n N and TIMEOUT), every reply checked to be a success. Prints
# "ok RPS WRITES FSYNCS" (the node's counters' growth; "- -" for Redis),
# "timeout", or "error WHY" (details on stderr).
rb_run() {
    local side="$1" n="$2" port out="$tmp/rb.out" rc=0 rps
    local -a auth=()
    shift 2
    local e0 e1 p0 p1 w0 w1 f0 f1
    # SADD adds up to N members to one set (myset) per run. Each run starts
    # from an empty set on both sides, so rounds do not pile it up past
    # Meridian's per-object limit (16 MiB; Redis has none) and every run
    # measures the same work.
    if [[ " $* " == *" -t sadd "* ]]; then
        if [ "$side" = meridian ]; then m_cli DEL myset >/dev/null; else "$REDIS_CLI" -p "$r_port" DEL myset >/dev/null; fi
    fi
    if [ "$side" = meridian ]; then
        port="$m_port"
        auth=(--user local -a "$m_token")
        e0="$(m_errors)"
        p0="$(m_cli INFO stats | sed -n 's/^total_commands_processed://p')"
        w0="$(metric "$m_metrics" meridian_deltas_originated_total)"
        f0="$(metric "$m_metrics" meridian_log_fsyncs_total)"
    else
        port="$r_port"
        e0="$(redis_info "$port" stats total_error_replies)"
    fi
    "${pin_client[@]}" timeout --foreground "$TIMEOUT" "$REDIS_BENCHMARK" -h 127.0.0.1 -p "$port" \
        "${auth[@]}" -n "$n" -r "$KEYSPACE" --csv "$@" >"$out" 2>&1 || rc=$?
    if [ "$rc" -eq 124 ]; then
        # Fewer than n requests in TIMEOUT seconds: the rate was below
        # n / TIMEOUT, a bound the table can still compare with a target.
        echo "$side: redis-benchmark $* -n $n: timed out after ${TIMEOUT}s (< $n requests in ${TIMEOUT}s)" >&2
        echo "timeout <$(awk -v n="$n" -v t="$TIMEOUT" 'BEGIN { printf "%.1f", n / t }')"
        return 0
    fi
    if [ "$rc" -ne 0 ] || grep -qi error "$out"; then
        echo "$side: redis-benchmark $* -n $n: exit status $rc; its output:" >&2
        sed 's/^/    /' "$out" | tail -5 >&2
        echo "error redis-benchmark"
        return 0
    fi
    rps="$(awk -F'"' 'NR == 2 { print $4 }' "$out")"
    [[ "$rps" =~ ^[0-9.]+$ ]] || { echo "$side: no figure in redis-benchmark's output" >&2; cat "$out" >&2; echo "error output"; return 0; }
    if [ "$side" = meridian ]; then
        e1="$(m_errors)"
        p1="$(m_cli INFO stats | sed -n 's/^total_commands_processed://p')"
        w1="$(metric "$m_metrics" meridian_deltas_originated_total)"
        f1="$(metric "$m_metrics" meridian_log_fsyncs_total)"
        if [ "$e1" != "$e0" ] || [ "$e1" = NA ]; then
            # NA: the node's metrics endpoint did not answer, so the check
            # could not be made: no figure rather than an unchecked one.
            echo "meridian: meridian_requests_total{outcome=\"error\"} went from $e0 to $e1" >&2
            echo "error error-counter"
            return 0
        fi
        if ! [[ "$p0" =~ ^[0-9]+$ && "$p1" =~ ^[0-9]+$ ]] || [ $((p1 - p0)) -lt "$n" ]; then
            echo "meridian: INFO total_commands_processed went from '$p0' to '$p1', expected +$n or more" >&2
            echo "error processed-count"
            return 0
        fi
        echo "ok $rps $((w1 - w0)) $((f1 - f0))"
    else
        e1="$(redis_info "$port" stats total_error_replies)"
        if [ "$e1" != "$e0" ]; then
            echo "redis: total_error_replies went from $e0 to $e1" >&2
            echo "error error-replies"
            return 0
        fi
        echo "ok $rps - -"
    fi
}

# ab_round KEY ROUND N ARGS...: Meridian then Redis, the same
# redis-benchmark arguments; records each side's ops/s (or why none) and
# Meridian's writes per fsync (KEY/wpf). A side that timed out or failed in
# an earlier round is not run again (each run is bounded, the row too).
ab_round() {
    local key="$1" round="$2" n="$3" side out status rps w f
    shift 3
    for side in meridian redis; do
        if awk -F'\t' -v k="$key" -v s="$side" '$1 == k && $2 == s && $4 !~ /^[0-9.]+$/ { bad = 1 } END { exit !bad }' "$samples"; then
            continue
        fi
        out="$(rb_run "$side" "$n" "$@")"
        read -r status rps w f <<<"$out"
        case "$status" in
        ok)
            [ -z "$after_run" ] || "$after_run" "$side" "$key" "$round"
            record "$key" "$side" "$round" "$rps"
            if [ "$side" = meridian ] && [ "$f" != - ] && [ "$f" -gt 0 ] 2>/dev/null; then
                record "$key/wpf" meridian "$round" "$(awk -v w="$w" -v f="$f" 'BEGIN { printf "%.1f", w / f }')"
            fi
            echo "  $key round $round/$ROUNDS: $side $rps ops/s" >&2
            ;;
        timeout)
            record "$key" "$side" "$round" "$rps"
            [ "$side" = redis ] || record "$key/wpf" meridian "$round" timeout
            echo "  $key round $round/$ROUNDS: $side timed out ($rps ops/s)" >&2
            ;;
        *)
            record "$key" "$side" "$round" error
            [ "$side" = redis ] || record "$key/wpf" meridian "$round" error
            ;;
        esac
    done
}

# ------------------------------------------------------------ results ---
# summarize KEY LABEL KIND CMP TARGET: the medians of KEY's samples, their
# ratio (Meridian/Redis), and whether CMP (ge|le) TARGET holds, as one
# results line. KIND: rate (ops/s), wpf (Meridian writes per fsync, no
# Redis side: the target applies to the figure), bytes (bytes per key).
# CMP "-": reported without a target. A side that timed out (sample "<X":
# fewer than n requests in TIMEOUT s) shows "< X" and the ratio its bound;
# the verdict is "missed" only when the bound proves it, else NO FIGURE.
summarize() {
    local line
    line="$(awk -F'\t' -v k="$1" -v label="$2" -v kind="$3" -v cmp="$4" -v target="$5" '
        function fmt(x) {
            if (kind == "bytes") return sprintf("%.0f B/key", x)
            if (kind == "wpf") return sprintf("%.1f writes/fsync", x)
            if (x >= 999500) return sprintf("%.2fM/s", x / 1e6)
            if (x >= 9995) return sprintf("%.1fk/s", x / 1e3)
            if (x >= 1000) return sprintf("%.2fk/s", x / 1e3)
            return sprintf("%.0f/s", x)
        }
        function fmt_ratio(r) { return sprintf((r < 0.1) ? "%.3f×" : "%.2f×", r) }
        # A side without a median: its bound if it timed out, else why.
        function shown(side) {
            if (bad[side] == "timeout" && (side in bound)) return "< " fmt(bound[side]) " (timeout)"
            return (bad[side] != "") ? bad[side] : "none"
        }
        function med(side,    i, j, t, m) {
            m = cnt[side]
            if (bad[side] != "") return ""
            if (m == 0) return ""
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
                if (v[side, j] < v[side, i]) { t = v[side, i]; v[side, i] = v[side, j]; v[side, j] = t }
            return (m % 2) ? v[side, (m + 1) / 2] : (v[side, m / 2] + v[side, m / 2 + 1]) / 2
        }
        $1 == k {
            if ($4 ~ /^[0-9.]+$/) v[$2, ++cnt[$2]] = $4 + 0
            else if ($4 ~ /^<[0-9.]+$/) { if (bad[$2] == "") { bad[$2] = "timeout"; bound[$2] = substr($4, 2) + 0 } }
            else if (bad[$2] == "" || bad[$2] == "timeout" || $4 == "error") bad[$2] = $4
        }
        END {
            mm = med("meridian"); rr = med("redis")
            mf = (mm != "") ? fmt(mm) : shown("meridian")
            rf = (kind == "wpf") ? "-" : (rr != "") ? fmt(rr) : shown("redis")
            ratio = "-"
            if (kind == "wpf") x = mm
            else if (mm != "" && rr != "" && rr > 0) { x = mm / rr; ratio = fmt_ratio(x) }
            else x = ""
            if (cmp == "-") { tf = "-"; verdict = "reported" }
            else {
                unit = (kind == "wpf") ? "" : "×"
                tf = ((cmp == "ge") ? "≥ " : "≤ ") target unit
                if (x == "") verdict = "NO FIGURE"
                else if ((cmp == "ge" && x >= target) || (cmp == "le" && x <= target)) verdict = "met"
                else verdict = "missed"
            }
            if (mm == "" || (kind != "wpf" && rr == "")) {
                verdict = "NO FIGURE (" ((mm == "") ? "meridian " bad["meridian"] : "redis " bad["redis"]) ")"
                # Meridian timed out, Redis measured: Meridian/Redis < bound/Redis.
                if (kind == "rate" && mm == "" && ("meridian" in bound) && rr != "" && rr > 0) {
                    ratio = "< " fmt_ratio(bound["meridian"] / rr)
                    if (cmp == "ge" && bound["meridian"] / rr < target) verdict = "missed"
                }
            }
            printf "%s\t%s\t%s\t%s\t%s\t%s\n", label, mf, rf, ratio, tf, verdict
        }' "$samples")"
    case "$line" in *"NO FIGURE"*) incomplete=1 ;; esac
    printf '%s\n' "$line" >>"$results"
}

# -------------------------------------------------------------- rows ---
row_resp() {
    echo "== RESP: redis-benchmark -c $RESP_CLIENTS, Meridian periodic ($PERIODIC_MS ms) vs Redis everysec ==" >&2
    meridian_cluster resp bench "$MERIDIAN_BASE_PORT" periodic
    redis_start "$REDIS_PORT" everysec
    local round p t n
    for ((round = 1; round <= ROUNDS; round++)); do
        for p in 1 "$PIPELINE"; do
            n="$REQUESTS"
            [ "$p" = 1 ] || n="$PIPELINED_REQUESTS"
            for t in set get incr; do
                ab_round "resp/$t/P$p" "$round" "$n" -c "$RESP_CLIENTS" -P "$p" -d 100 -t "$t"
            done
            # SADD: one set, members from a SADD_KEYSPACE space (redis-benchmark
            # takes the last -r), so a run cannot grow it past Meridian's
            # 16 MiB object limit (Redis has none): both sides do the same work.
            ab_round "resp/sadd/P$p" "$round" "$n" -c "$RESP_CLIENTS" -P "$p" -d 100 -t sadd -r "$SADD_KEYSPACE"
        done
    done
    stop_all
    for p in 1 "$PIPELINE"; do
        for t in SET GET INCR SADD; do
            if [ "$p" = 1 ]; then
                summarize "resp/${t,,}/P$p" "RESP $t -c $RESP_CLIENTS (periodic vs everysec)" rate ge 0.8
            else
                summarize "resp/${t,,}/P$p" "RESP $t -c $RESP_CLIENTS -P $p (periodic vs everysec)" rate ge 0.5
            fi
        done
    done
    note "RESP rows: redis-benchmark -c $RESP_CLIENTS -r $KEYSPACE -d 100 -t <test> [-P $PIPELINE]," \
        "-n $REQUESTS unpipelined / $PIPELINED_REQUESTS pipelined per run, $ROUNDS rounds;" \
        "Meridian: one node, durability periodic (periodic_ms $PERIODIC_MS), RESP user local;" \
        "Redis: --appendonly yes --appendfsync everysec --save \"\". SET keys are key:<12 digits>" \
        "(16 bytes); INCR hits counter:<12 digits>, SADD adds element:<12 digits> to one set (myset)," \
        "members drawn from -r $SADD_KEYSPACE, the set emptied before each run."
}

row_durable() {
    echo "== durable: redis-benchmark -c $RESP_CLIENTS, Meridian sync vs Redis always ==" >&2
    meridian_cluster durable bench "$MERIDIAN_BASE_PORT" sync
    redis_start "$REDIS_PORT" always
    local round t
    for ((round = 1; round <= ROUNDS; round++)); do
        for t in set incr; do
            ab_round "durable/$t" "$round" "$REQUESTS" -c "$RESP_CLIENTS" -d 100 -t "$t"
        done
    done
    stop_all
    summarize durable/set "durable SET -c $RESP_CLIENTS (sync vs always)" rate ge 1.0
    summarize durable/incr "durable INCR -c $RESP_CLIENTS (sync vs always)" rate ge 1.0
    summarize durable/set/wpf "durable SET: Meridian writes per fsync" wpf ge 20
    summarize durable/incr/wpf "durable INCR: Meridian writes per fsync" wpf ge 20
    note "durable rows: as the RESP rows, -n $REQUESTS; Meridian durability sync (group commit)," \
        "Redis --appendfsync always. Writes per fsync: the node's meridian_deltas_originated_total" \
        "over meridian_log_fsyncs_total, growth during each run, median over rounds."
}

row_replicating() {
    local base=$((MERIDIAN_BASE_PORT + 20)) i peers round n1 n2
    echo "== replicating: SET -c $RESP_CLIENTS against one node of three / a primary with two replicas ==" >&2
    meridian_cluster repl a,b,c "$base" periodic
    for ((i = 0; i < READY_TENTHS * 2; i++)); do
        peers="$(metric "$m_metrics" meridian_peer_connected)"
        [ "$peers" = 2 ] && break
        sleep 0.1
    done
    [ "$peers" = 2 ] || die "node $m_node sees $peers of its 2 peers connected"
    redis_start "$REDIS_PORT" everysec
    redis_start $((REDIS_PORT + 1)) everysec "$REDIS_PORT"
    redis_start $((REDIS_PORT + 2)) everysec "$REDIS_PORT"
    for ((i = 0; i < READY_TENTHS * 2; i++)); do
        n1="$(redis_info $((REDIS_PORT + 1)) replication master_link_status)"
        n2="$(redis_info $((REDIS_PORT + 2)) replication master_link_status)"
        [ "$n1$n2" = upup ] && [ "$(redis_info "$REDIS_PORT" replication connected_slaves)" = 2 ] && break
        sleep 0.1
    done
    [ "$n1$n2" = upup ] || die "the Redis replicas did not connect (master_link_status $n1 / $n2)"
    after_run=repl_catchup
    for ((round = 1; round <= ROUNDS; round++)); do
        ab_round repl/set "$round" "$REQUESTS" -c "$RESP_CLIENTS" -d 100 -t set
    done
    after_run=""
    # Did the load reach the others?
    local applied=0 a
    for a in "${m_peer_metrics[@]}"; do
        a="$(metric "$a" meridian_deltas_applied_total)"
        [[ "$a" =~ ^[0-9]+$ ]] && applied=$((applied + a))
    done
    stop_all
    summarize repl/set "replicating SET -c $RESP_CLIENTS (3 nodes vs primary + 2 replicas)" rate ge 0.6
    note "replicating row: \`meridian init --regions a,b,c\`, three nodes on 127.0.0.1, all periodic" \
        "($PERIODIC_MS ms), load against a-1's RESP port (user local); Redis: a primary and two" \
        "redis-server --replicaof replicas, all --appendfsync everysec; -n $REQUESTS per run." \
        "Pinning: $pinning_repl. The two peers applied $applied deltas from the node in all." \
        "Time from the end of a load until the others had everything, per round (0.1 s polls):" \
        "Meridian $(catchups meridian) (meridian_peer_lag_deltas back to 0)," \
        "Redis $(catchups redis) (each replica's slave_repl_offset = the primary's master_repl_offset)."
}

# After a replicating run: how long until the others hold everything the
# loaded server has (bounded by TIMEOUT), recorded as repl/catchup.
repl_catchup() {
    local side="$1" round="$3" t0 i done_ p m
    t0="$(date +%s%N)"
    for ((i = 0; i < TIMEOUT * 10; i++)); do
        if [ "$side" = meridian ]; then
            [ "$(metric "$m_metrics" meridian_peer_lag_deltas)" = 0 ] && done_=1
        else
            m="$(redis_info "$REDIS_PORT" replication master_repl_offset)"
            done_=1
            for p in $((REDIS_PORT + 1)) $((REDIS_PORT + 2)); do
                [ -n "$m" ] && [ "$(redis_info "$p" replication slave_repl_offset)" = "$m" ] || done_=""
            done
        fi
        [ -n "$done_" ] && break
        sleep 0.1
    done
    if [ -n "$done_" ]; then
        record repl/catchup "$side" "$round" "$((($(date +%s%N) - t0) / 1000000))"
    else
        record repl/catchup "$side" "$round" "not-within-${TIMEOUT}s"
    fi
}

catchups() { awk -F'\t' -v s="$1" '$1 == "repl/catchup" && $2 == s { printf "%s%s", sep, $4 ($4 ~ /^[0-9]+$/ ? " ms" : ""); sep = ", " }' "$samples"; }

row_native() {
    local durability fsync name json tsv e0 e1 bound nclients rc
    echo "== native: meridian bench compare (QUIC client), clients $CLIENTS ==" >&2
    nclients="$(awk -F, '{ print NF }' <<<"$CLIENTS")"
    bound="$(awk -v r="$ROUNDS" -v c="$nclients" -v d="$duration_s" -v w="$warmup_s" -v t="$TIMEOUT" \
        'BEGIN { printf "%d", r * c * 2 * (d + w + 5) + t }')"
    for pair in "periodic everysec" "sync always"; do
        read -r durability fsync <<<"$pair"
        name="$durability vs $fsync"
        json="$tmp/native-$durability.json"
        meridian_cluster "native-$durability" bench "$MERIDIAN_BASE_PORT" "$durability"
        redis_start "$REDIS_PORT" "$fsync"
        e0="$(m_errors)"
        rc=0
        "${pin_client[@]}" timeout --foreground "$bound" "$MERIDIAN" bench compare \
            --a "meridian:$m_dir/client.toml" --a-label "meridian $durability" --a-metrics "$m_metrics" \
            --b "redis://127.0.0.1:$REDIS_PORT" --b-label "redis $fsync" \
            --row "$name" --clients "$CLIENTS" --rounds "$ROUNDS" \
            --duration "$DURATION" --warmup "$WARMUP" --keys "$KEYSPACE" \
            --key-bytes 16 --value-bytes 100 --workload set --level local \
            --quiet --json >"$json" || rc=$?
        e1="$(m_errors)"
        stop_all
        if [ "$rc" -ne 0 ]; then
            echo "meridian bench compare ($name) failed: exit status $rc" >&2
            record "native/$durability/c?" meridian 1 error
            summarize "native/$durability/c?" "native QUIC SET ($name)" rate ge 0.6
            continue
        fi
        tsv="$("$MERIDIAN" bench report --tsv "$json")"
        local clients a b aerr berr
        while IFS=$'\t' read -r _ clients a b _ _ _ _ _ _ aerr berr; do
            [ "$clients" = clients ] && continue
            if [ "$aerr" != 0 ] || [ "$e1" != "$e0" ] || [ "$e1" = NA ]; then
                echo "native $name c$clients: Meridian errors: $aerr in the load generator, node error counter $e0 -> $e1" >&2
                record "native/$durability/c$clients" meridian 1 error
            else
                record "native/$durability/c$clients" meridian 1 "$a"
            fi
            if [ "$berr" != 0 ]; then
                echo "native $name c$clients: $berr Redis errors" >&2
                record "native/$durability/c$clients" redis 1 error
            else
                record "native/$durability/c$clients" redis 1 "$b"
            fi
            if [ "$durability" = periodic ]; then
                summarize "native/$durability/c$clients" "native QUIC SET, clients $clients ($name)" rate ge 0.6
            else
                summarize "native/$durability/c$clients" "native QUIC SET, clients $clients ($name)" rate - -
            fi
        done <<<"$tsv"
    done
    note "native rows: meridian bench compare --workload set --clients $CLIENTS --rounds $ROUNDS" \
        "--duration $DURATION --warmup $WARMUP --keys $KEYSPACE (16-byte keys, 100-byte values," \
        "one connection and one request in flight per client; Meridian through meridian-client/QUIC," \
        "Redis through the load generator's RESP codec); medians of the rounds, A/B interleaved by" \
        "bench compare itself."
}

row_large() {
    local round d n
    echo "== large values: redis-benchmark SET -c $LARGE_CLIENTS, 10 KB and 1 MB ==" >&2
    meridian_cluster large bench "$MERIDIAN_BASE_PORT" periodic
    redis_start "$REDIS_PORT" everysec
    for ((round = 1; round <= ROUNDS; round++)); do
        for d in 10240 1048576; do
            n="$LARGE_REQUESTS"
            [ "$d" = 10240 ] || n="$HUGE_REQUESTS"
            ab_round "large/$d" "$round" "$n" -c "$LARGE_CLIENTS" -d "$d" -t set
        done
    done
    stop_all
    summarize large/10240 "SET 10 KB values -c $LARGE_CLIENTS (periodic vs everysec)" rate ge 0.6
    summarize large/1048576 "SET 1 MB values -c $LARGE_CLIENTS (periodic vs everysec)" rate ge 0.6
    note "large rows: redis-benchmark -t set -c $LARGE_CLIENTS -r $KEYSPACE -d 10240 (-n $LARGE_REQUESTS)" \
        "and -d 1048576 (-n $HUGE_REQUESTS) per run, $ROUNDS rounds; periodic ($PERIODIC_MS ms) vs everysec."
}

# Writes KEYS distinct keys (key:<12 digits>, 100-byte values) through
# redis-cli --pipe; every reply must be +OK. fill PORT [AUTH ARGS...]
fill() {
    local port="$1" out="$tmp/fill.out" rc=0 t0="${EPOCHREALTIME/./}"
    shift
    awk -v n="$KEYS" 'BEGIN {
            v = sprintf("%0100d", 0); gsub(/0/, "v", v)
            for (i = 0; i < n; i++) {
                k = sprintf("key:%012d", i)
                printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
            }
        }' | "${pin_client[@]}" timeout --foreground "$FILL_TIMEOUT" "$REDIS_CLI" -p "$port" "$@" --pipe >"$out" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ] || ! grep -q "errors: 0, replies: $KEYS\$" "$out"; then
        echo "fill of $KEYS keys on port $port failed (exit status $rc):" >&2
        sed 's/^/    /' "$out" >&2
        return 1
    fi
    echo "  filled $KEYS keys on port $port in $(((${EPOCHREALTIME/./} - t0) / 1000)) ms" >&2
}

rss_bytes() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }
du_bytes() { du -sb "$1" 2>/dev/null | awk '{ print $1 } END { if (NR == 0) print 0 }'; }

row_memory() {
    local m_rss0 m_du0 r_rss0 r_du0 m_rss1 m_du1 r_rss1 r_du1 ok=1 e0
    echo "== memory and disk: $KEYS SETs of 100-byte values ==" >&2
    meridian_cluster memory bench "$MERIDIAN_BASE_PORT" periodic
    redis_start "$REDIS_PORT" everysec
    sleep "$SETTLE"
    m_rss0="$(rss_bytes "$m_pid")"
    m_du0="$(du_bytes "$m_data")"
    r_rss0="$(redis_info "$REDIS_PORT" memory used_memory_rss)"
    r_du0="$(du_bytes "$r_dir")"
    e0="$(m_errors)"
    fill "$m_port" --user local --pass "$m_token" --no-auth-warning || ok=0
    [ "$(m_errors)" = "$e0" ] || { echo "memory: the node counted failed requests during the fill" >&2; ok=0; }
    fill "$REDIS_PORT" || ok=0
    [ "$(m_cli STRLEN key:000000000000)" = 100 ] || { echo "memory: key:000000000000 is not 100 bytes on Meridian" >&2; ok=0; }
    sleep "$SETTLE"
    m_rss1="$(rss_bytes "$m_pid")"
    m_du1="$(du_bytes "$m_data")"
    r_rss1="$(redis_info "$REDIS_PORT" memory used_memory_rss)"
    r_du1="$(du_bytes "$r_dir")"
    stop_all
    local per='BEGIN { printf "%.1f", (a - b) / n }'
    if [ "$ok" = 1 ]; then
        record mem/rss meridian 1 "$(awk -v a="$m_rss1" -v b="$m_rss0" -v n="$KEYS" "$per")"
        record mem/rss redis 1 "$(awk -v a="$r_rss1" -v b="$r_rss0" -v n="$KEYS" "$per")"
        record mem/disk meridian 1 "$(awk -v a="$m_du1" -v b="$m_du0" -v n="$KEYS" "$per")"
        record mem/disk redis 1 "$(awk -v a="$r_du1" -v b="$r_du0" -v n="$KEYS" "$per")"
    else
        record mem/rss meridian 1 error
        record mem/disk meridian 1 error
    fi
    summarize mem/rss "memory per key, $KEYS keys (VmRSS vs used_memory_rss)" bytes le 2.0
    summarize mem/disk "disk per key, $KEYS keys (data dir vs AOF dir)" bytes le 2.0
    local mb='BEGIN { printf "%.1f MB", x / 1e6 }'
    note "memory rows: $KEYS SETs of distinct keys key:<12 digits> with 100-byte values" \
        "(redis-cli --pipe, every reply +OK), periodic vs everysec, measured ${SETTLE}s after the fill;" \
        "per key = (after - before) / KEYS. Meridian VmRSS $(awk -v x="$m_rss0" "$mb") -> $(awk -v x="$m_rss1" "$mb")," \
        "data dir $(awk -v x="$m_du0" "$mb") -> $(awk -v x="$m_du1" "$mb"); Redis used_memory_rss" \
        "$(awk -v x="$r_rss0" "$mb") -> $(awk -v x="$r_rss1" "$mb"), AOF dir $(awk -v x="$r_du0" "$mb") -> $(awk -v x="$r_du1" "$mb")."
}

# --------------------------------------------------------------- main ---
{
    echo "# Meridian vs Redis ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo "kernel:   $(uname -r); CPUs: $(nproc); $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')"
    echo "commit:   $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "meridian: $MERIDIAN"
    echo "redis:    $("$REDIS_SERVER" --version | head -1)"
    echo "pinning:  $pinning"
    echo "load:     $(uptime | sed 's/.*load average/load average/')"
    probe_start=$(date +%s%N)
    dd if=/dev/zero of="$tmp/fsync-probe" bs=4k count=500 oflag=dsync status=none
    probe_end=$(date +%s%N)
    echo "fdatasync probe: $(((probe_end - probe_start) / 500 / 1000)) µs per 4 KiB O_DSYNC write (dd, 500 writes)"
    rm -f "$tmp/fsync-probe"
    echo "rows:     $ROWS; $ROUNDS rounds; key space $KEYSPACE; quick mode $QUICK"
    echo
} >&2

IFS=, read -ra wanted <<<"$ROWS"
for row in "${wanted[@]}"; do
    case "$row" in
    resp | durable | replicating | native | large | memory) "row_$row" ;;
    *) die "unknown row '$row' in ROWS (resp, durable, replicating, native, large, memory)" ;;
    esac
done

echo "load after: $(uptime | sed 's/.*load average/load average/')" >&2
echo >&2

# The table: Markdown, columns padded.
{
    printf 'row\tMeridian\tRedis\tM/R\ttarget\tresult\n'
    cat "$results"
} | awk -F'\t' '
    # Characters, not bytes (mawk counts bytes): skip UTF-8 continuation bytes.
    function clen(s,    t) { t = s; gsub(/[\200-\277]/, "", t); return length(t) }
    function pad(s, w) { while (clen(s) < w) s = s " "; return s }
    { n++; for (i = 1; i <= NF; i++) { c[n, i] = $i; w = clen($i); if (w > width[i]) width[i] = w } nf = NF }
    END {
        for (r = 1; r <= n; r++) {
            line = "|"
            for (i = 1; i <= nf; i++) line = line " " pad(c[r, i], width[i]) " |"
            print line
            if (r == 1) {
                line = "|"
                for (i = 1; i <= nf; i++) { d = ""; for (j = 0; j < width[i]; j++) d = d "-"; line = line " " d " |" }
                print line
            }
        }
    }'
echo
[ "$QUICK" = 1 ] && echo "Quick mode: request counts and KEYS shrunk to check that the script works; the figures mean nothing."
echo "Pinning: $pinning. Ratios are Meridian/Redis of the medians (for bytes per key: lower is better)."
cat "$notes"

if [ -n "$KEEP_JSON" ]; then
    mkdir -p "$KEEP_JSON"
    cp "$samples" "$results" "$KEEP_JSON"/
    cp "$tmp"/native-*.json "$KEEP_JSON"/ 2>/dev/null || true
fi
if [ "$incomplete" = 1 ]; then
    echo "Some rows have no figure (a run timed out or a reply was not a success; see above)." >&2
    exit 1
fi
