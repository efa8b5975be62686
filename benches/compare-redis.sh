#!/usr/bin/env bash
# Meridian vs Redis, side by side, with the same load generator.
#
# Rows (each at 1, 16 and 64 concurrent clients, SET of 16-byte keys and
# 100-byte values over a 1M key space, A/B rounds interleaved):
#   periodic vs everysec   Meridian durability = "periodic" (periodic_ms =
#                          PERIODIC_MS, 1000 by default to match everysec)
#                          vs redis-server --appendonly yes --appendfsync everysec
#   sync vs always         Meridian durability = "sync" (group commit)
#                          vs redis-server --appendonly yes --appendfsync always
#
# What it does: checks that redis-server and the meridian release binary
# exist (installs nothing; says what is missing and exits 2), creates a
# one-node Meridian cluster and a Redis data directory in a temporary
# directory, and for each row starts both servers on loopback ports (pinned
# to SERVER_CPU with taskset when there are >= 2 CPUs), runs
# `meridian bench compare` (pinned to CLIENT_CPU), stops exactly the
# processes it started (by PID), and finally prints one table
# (`meridian bench report`). Everything it created is removed on exit.
#
# Settings (environment): MERIDIAN (binary), REDIS_SERVER, CLIENTS, ROUNDS,
# DURATION, WARMUP, KEYS, PERIODIC_MS, REDIS_PORT, MERIDIAN_BASE_PORT,
# SERVER_CPU, CLIENT_CPU, PIN (auto|none), KEEP_JSON (directory to copy the
# per-row JSON into).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

MERIDIAN="${MERIDIAN:-${CARGO_TARGET_DIR:-$repo/target}/release/meridian}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
CLIENTS="${CLIENTS:-1,16,64}"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-1s}"
KEYS="${KEYS:-1000000}"
PERIODIC_MS="${PERIODIC_MS:-1000}"
REDIS_PORT="${REDIS_PORT:-6390}"
MERIDIAN_BASE_PORT="${MERIDIAN_BASE_PORT:-7300}"
SERVER_CPU="${SERVER_CPU:-1}"
CLIENT_CPU="${CLIENT_CPU:-0}"
PIN="${PIN:-auto}"
KEEP_JSON="${KEEP_JSON:-}"

# Bound on waiting for a server to answer, and for one to stop, in tenths
# of a second.
READY_TENTHS=150
STOP_TENTHS=100

missing=0
if ! command -v "$REDIS_SERVER" >/dev/null 2>&1; then
    echo "missing: redis-server ($REDIS_SERVER). Install it, e.g.: apt-get install -y redis-server" >&2
    missing=1
fi
if [ ! -x "$MERIDIAN" ]; then
    echo "missing: the meridian release binary at $MERIDIAN. Build it: cargo build --release -p meridian-cli" >&2
    echo "         (or point MERIDIAN=/path/to/meridian at one)" >&2
    missing=1
fi
if [ "$missing" -ne 0 ]; then
    echo "compare-redis.sh installs nothing itself; install the above and run it again." >&2
    exit 2
fi

pin_server=()
pin_client=()
if [ "$PIN" != none ] && command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    pin_server=(taskset -c "$SERVER_CPU")
    pin_client=(taskset -c "$CLIENT_CPU")
    pinning="servers on CPU $SERVER_CPU, load generator on CPU $CLIENT_CPU"
else
    pinning="unpinned"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/meridian-compare.XXXXXX")"
started=()

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

cleanup() {
    local pid
    for pid in "${started[@]}"; do
        stop_pid "$pid"
    done
    started=()
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

redis_ready() {
    local i reply
    for ((i = 0; i < READY_TENTHS; i++)); do
        if { exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT"; } 2>/dev/null; then
            printf 'PING\r\n' >&3
            reply=""
            read -r -t 1 reply <&3 || true
            exec 3>&- 3<&-
            [ "${reply%$'\r'}" = "+PONG" ] && return 0
        fi
        sleep 0.1
    done
    return 1
}

meridian_ready() {
    local i
    for ((i = 0; i < READY_TENTHS; i++)); do
        if "$MERIDIAN" cli --config "$tmp/cluster/client.toml" --timeout-ms 500 count bench-ready \
            >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# The environment the figures come from.
{
    echo "# Meridian vs Redis ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo "kernel:   $(uname -r); CPUs: $(nproc); $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')"
    echo "commit:   $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "redis:    $("$REDIS_SERVER" --version | head -1)"
    echo "pinning:  $pinning"
    echo "load:     $(uptime | sed 's/.*load average/load average/')"
    probe_start=$(date +%s%N)
    dd if=/dev/zero of="$tmp/fsync-probe" bs=4k count=500 oflag=dsync status=none
    probe_end=$(date +%s%N)
    echo "fdatasync probe: $(( (probe_end - probe_start) / 500 / 1000 )) µs per 4 KiB O_DSYNC write (dd, 500 writes)"
    rm -f "$tmp/fsync-probe"
    echo "workload: clients $CLIENTS, $ROUNDS rounds of $DURATION (+$WARMUP warm-up), $KEYS keys, SET 16-byte keys / 100-byte values"
    echo
} >&2

"$MERIDIAN" init --dir "$tmp/cluster" --regions bench --base-port "$MERIDIAN_BASE_PORT" >/dev/null
node_toml="$tmp/cluster/bench-1.toml"
metrics="127.0.0.1:$((MERIDIAN_BASE_PORT + 2))"

rows=("periodic everysec" "sync always")
for row in "${rows[@]}"; do
    read -r durability fsync <<<"$row"
    name="$durability vs $fsync"
    echo "== $name ==" >&2

    rm -rf "$tmp/cluster/data" "$tmp/redis"
    mkdir -p "$tmp/redis"
    sed -i -E \
        -e "s/^durability = \"[a-z]+\"/durability = \"$durability\"/" \
        -e "s/^periodic_ms = [0-9]+/periodic_ms = $PERIODIC_MS/" \
        "$node_toml"
    grep -q "^durability = \"$durability\"" "$node_toml"

    "${pin_server[@]}" "$MERIDIAN" serve --config "$node_toml" >"$tmp/meridian-$durability.log" 2>&1 &
    mpid=$!
    started+=("$mpid")
    "${pin_server[@]}" "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$tmp/redis" \
        --appendonly yes --appendfsync "$fsync" --save "" --daemonize no \
        --logfile "$tmp/redis-$fsync.log" &
    rpid=$!
    started+=("$rpid")

    if ! redis_ready; then
        echo "redis-server did not answer on 127.0.0.1:$REDIS_PORT; its log:" >&2
        tail -20 "$tmp/redis-$fsync.log" >&2 || true
        exit 1
    fi
    if ! meridian_ready; then
        echo "the meridian node did not answer; its log:" >&2
        tail -20 "$tmp/meridian-$durability.log" >&2 || true
        exit 1
    fi

    "${pin_client[@]}" "$MERIDIAN" bench compare \
        --a "meridian:$tmp/cluster/client.toml" --a-label "meridian $durability" --a-metrics "$metrics" \
        --b "redis://127.0.0.1:$REDIS_PORT" --b-label "redis $fsync" \
        --row "$name" --clients "$CLIENTS" --rounds "$ROUNDS" \
        --duration "$DURATION" --warmup "$WARMUP" --keys "$KEYS" \
        --key-bytes 16 --value-bytes 100 --workload set --level local \
        --json >"$tmp/row-$durability.json"

    stop_pid "$mpid"
    stop_pid "$rpid"
    started=()
done

echo "load after: $(uptime | sed 's/.*load average/load average/')" >&2
echo >&2
"$MERIDIAN" bench report "$tmp/row-periodic.json" "$tmp/row-sync.json"
if [ -n "$KEEP_JSON" ]; then
    mkdir -p "$KEEP_JSON"
    cp "$tmp"/row-*.json "$KEEP_JSON"/
fi
