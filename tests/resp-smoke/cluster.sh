#!/usr/bin/env bash
# A three-region Meridian cluster on 127.0.0.1 for the RESP smoke scripts
# (tests/resp-smoke/run.sh and the scripts it runs). Every node is a
# background `meridian serve` whose PID is kept in <dir>/<node>.pid, so a
# caller's trap can stop exactly the processes started here.
#
#   cluster.sh up    MERIDIAN DIR BASE_PORT  init (if DIR has no cluster), start every node, wait
#                                            until each answers PING after AUTH and sees its peers
#   cluster.sh start MERIDIAN DIR NODE       start one node (same config: a restart), wait for PING
#   cluster.sh stop  DIR [--kill] [NODE...]  stop nodes by PID (default all; SIGTERM, or SIGKILL
#                                            with --kill), wait for them to exit
#   cluster.sh wait-peers DIR NODE N         wait until NODE reports N peers connected
#   cluster.sh nodes DIR                     node names, one a line
#   cluster.sh token DIR                     the access token (the RESP password)
#   cluster.sh resp-port DIR NODE            NODE's RESP port
#   cluster.sh metrics-port DIR NODE         NODE's metrics (HTTP) port
#   cluster.sh metrics DIR NODE              NODE's metrics exposition (GET /metrics)
#
# Waits are bounded (READY_SECS, default 30 s); no tool beyond bash is
# needed (the RESP probe speaks RESP over bash's /dev/tcp).
set -euo pipefail

REGIONS="${REGIONS:-us-east,eu-west,ap-south}"
READY_SECS="${READY_SECS:-30}"

die() { echo "cluster.sh: $*" >&2; exit 1; }

nodes() { # DIR -> node names, in client.toml order
  sed -n 's/^name = "\(.*\)"/\1/p' "$1/client.toml"
}
token() { sed -n 's/^token = "\(.*\)"/\1/p' "$1/client.toml"; }
listen_port() { # DIR NODE KEY
  sed -n "s/^$3 = \"[^\"]*:\([0-9]*\)\".*/\1/p" "$1/$2.toml"
}

# One RESP exchange on a fresh connection: AUTH local <token>, then the
# command given (already RESP-encoded); prints the raw reply lines. Bounded
# by a 2 s read timeout per line.
resp_exchange() { # PORT TOKEN RESP_COMMAND MAX_LINES
  local port="$1" tok="$2" cmd="$3" max="$4" line i
  { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
  printf '*3\r\n$4\r\nAUTH\r\n$5\r\nlocal\r\n$%d\r\n%s\r\n%b' "${#tok}" "$tok" "$cmd" >&3 || { exec 3<&-; return 1; }
  for ((i = 0; i < max; i++)); do
    IFS= read -r -t 2 line <&3 || break
    printf '%s\n' "${line%$'\r'}"
  done
  exec 3<&-
}

answers_ping() { # DIR NODE
  local out
  out=$(resp_exchange "$(listen_port "$1" "$2" resp_listen)" "$(token "$1")" '*1\r\n$4\r\nPING\r\n' 2) || return 1
  [ "$out" = $'+OK\n+PONG' ]
}

peers_connected() { # DIR NODE -> number of peers the node's links are up to
  resp_exchange "$(listen_port "$1" "$2" resp_listen)" "$(token "$1")" \
    '*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n' 12 |
    sed -n 's/^meridian_peers_connected:\([0-9]*\)$/\1/p'
}

wait_for() { # DESCRIPTION COMMAND... : retry for READY_SECS
  local what="$1" deadline=$((SECONDS + READY_SECS))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${READY_SECS}s waiting for $what"
    sleep 0.2
  done
}

alive() { # PID
  kill -0 "$1" 2>/dev/null
}

start_node() { # MERIDIAN DIR NODE
  local bin="$1" dir="$2" node="$3" pid
  [ -f "$dir/$node.toml" ] || die "no config $dir/$node.toml"
  if [ -f "$dir/$node.pid" ] && alive "$(cat "$dir/$node.pid")"; then
    die "$node is already running (PID $(cat "$dir/$node.pid"))"
  fi
  "$bin" serve --config "$dir/$node.toml" >>"$dir/$node.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/$node.pid"
  node_up() { alive "$pid" || die "$node (PID $pid) exited; log: $dir/$node.log"$'\n'"$(tail -n 20 "$dir/$node.log")"; answers_ping "$dir" "$node"; }
  wait_for "$node to answer PING after AUTH" node_up
}

stop_nodes() { # DIR SIGNAL NODE...
  local dir="$1" sig="$2" node pid deadline
  shift 2
  for node in "$@"; do
    [ -f "$dir/$node.pid" ] || continue
    pid=$(cat "$dir/$node.pid")
    alive "$pid" && kill -s "$sig" "$pid" 2>/dev/null || true
  done
  for node in "$@"; do
    [ -f "$dir/$node.pid" ] || continue
    pid=$(cat "$dir/$node.pid")
    deadline=$((SECONDS + 15))
    while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if alive "$pid"; then
      echo "cluster.sh: $node (PID $pid) still running 15 s after SIG$sig; sending SIGKILL" >&2
      kill -s KILL "$pid" 2>/dev/null || true
    fi
    # Reap it if it is our child (it is not when another cluster.sh started it).
    wait "$pid" 2>/dev/null || true
    rm -f "$dir/$node.pid"
  done
}

cmd="${1:-}"
shift || true
case "$cmd" in
  up)
    [ $# -eq 3 ] || die "usage: cluster.sh up MERIDIAN DIR BASE_PORT"
    bin="$1" dir="$2" base="$3"
    if [ ! -f "$dir/client.toml" ]; then
      "$bin" init --dir "$dir" --regions "$REGIONS" --base-port "$base" >"$dir.init.log" 2>&1 ||
        die "meridian init failed: $(cat "$dir.init.log")"
    fi
    mapfile -t all < <(nodes "$dir")
    for node in "${all[@]}"; do start_node "$bin" "$dir" "$node"; done
    want=$((${#all[@]} - 1))
    for node in "${all[@]}"; do
      wait_for "$node to see its $want peers" eval '[ "$(peers_connected "$dir" "$node")" = "$want" ]'
    done
    ;;
  start)
    [ $# -eq 3 ] || die "usage: cluster.sh start MERIDIAN DIR NODE"
    start_node "$@"
    ;;
  stop)
    [ $# -ge 1 ] || die "usage: cluster.sh stop DIR [--kill] [NODE...]"
    dir="$1"
    shift
    sig=TERM
    if [ "${1:-}" = --kill ]; then sig=KILL; shift; fi
    if [ $# -eq 0 ]; then mapfile -t targets < <(nodes "$dir"); else targets=("$@"); fi
    stop_nodes "$dir" "$sig" "${targets[@]}"
    ;;
  wait-peers)
    [ $# -eq 3 ] || die "usage: cluster.sh wait-peers DIR NODE N"
    dir="$1" node="$2" want="$3"
    wait_for "$node to see $want peers connected" eval '[ "$(peers_connected "$dir" "$node")" = "$want" ]'
    ;;
  nodes) nodes "$1" ;;
  token) token "$1" ;;
  resp-port) listen_port "$1" "$2" resp_listen ;;
  metrics-port) listen_port "$1" "$2" metrics_listen ;;
  metrics)
    [ $# -eq 2 ] || die "usage: cluster.sh metrics DIR NODE"
    { exec 3<>"/dev/tcp/127.0.0.1/$(listen_port "$1" "$2" metrics_listen)"; } 2>/dev/null ||
      die "$2's metrics port does not answer"
    printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
    # The node closes the connection after the response; drop the HTTP head.
    timeout 5 cat <&3 | tr -d '\r' | sed '1,/^$/d'
    exec 3<&-
    ;;
  *) die "unknown command '${cmd}' (up, start, stop, wait-peers, nodes, token, resp-port, metrics-port, metrics)" ;;
esac
