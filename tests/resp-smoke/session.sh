#!/usr/bin/env bash
# redis-cli sessions against a running smoke cluster, each compared with
# the transcript written here: lines starting "> " are what is typed (sent
# on redis-cli's standard input, one command a line, all on one
# connection), lines starting "! " are what redis-cli must print on stderr,
# every other non-empty line is what it must print on stdout (`--no-raw`,
# the format of an interactive session). In a transcript @L@ stands for the
# session's level and @TOKEN@ for the access token.
#
#   session.sh DIR     DIR: a cluster started by cluster.sh up
#
# Prints "ok - <session>" per matching session, a diff per mismatch, and
# exits non-zero if any session differs. Needs redis-cli (Debian
# redis-tools).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$1"
cluster() { bash "$here/cluster.sh" "$@"; }
TOKEN="$(cluster token "$dir")"
port() { cluster resp-port "$dir" "$1"; }
work="$(mktemp -d "${TMPDIR:-/tmp}/resp-session.XXXXXX")"
trap 'rm -rf "$work"' EXIT
passed=0 failed=0

# session NAME LEVEL REDIS-CLI-ARGS... <<transcript
session() {
  local name="$1" level="$2" rc=0
  shift 2
  sed -e "s/@L@/$level/g" -e "s/@TOKEN@/$TOKEN/g" >"$work/t"
  sed -n 's/^> //p' "$work/t" >"$work/in"
  sed -n 's/^! //p' "$work/t" >"$work/err.want"
  grep -v -e '^> ' -e '^! ' -e '^$' "$work/t" >"$work/out.want" || true
  timeout 20 redis-cli --no-raw --no-auth-warning "$@" <"$work/in" >"$work/out.raw" 2>"$work/err.got" || rc=$?
  # What varies from run to run: connection ids, addresses, ages.
  sed -E -e 's/^id=[0-9]+ addr=[^ ]+ laddr=[^ ]+ /id=ID addr=ADDR laddr=LADDR /' \
    -e 's/ age=[0-9]+ / age=AGE /' -e 's/^(4# "id" => \(integer\)) [0-9]+$/\1 ID/' \
    "$work/out.raw" >"$work/out.got"
  if [ "$rc" -ge 124 ]; then
    echo "not ok - $name: redis-cli timed out or was killed (status $rc)"
    failed=$((failed + 1))
  elif diff -u "$work/out.want" "$work/out.got" >"$work/diff" &&
    diff -u "$work/err.want" "$work/err.got" >>"$work/diff"; then
    echo "ok - $name"
    passed=$((passed + 1))
  else
    echo "not ok - $name (--- expected, +++ redis-cli printed):"
    sed 's/^/    /' "$work/diff"
    failed=$((failed + 1))
  fi
}

# The data commands at each level, each level through another node (the
# AUTH user name is the level). SMEMBERS lists members in byte order (the
# engine's set is ordered), so its output is deterministic.
for level_node in local:us-east-1 leader:eu-west-1 quorum:ap-south-1 all:us-east-1; do
  level="${level_node%%:*}" node="${level_node#*:}"
  session "$level on $node: PING, strings, counters, sets, keys, type errors" "$level" \
    -p "$(port "$node")" --user "$level" --pass "$TOKEN" <<'T'
> PING
PONG
> CLIENT GETNAME
(nil)
> SET @L@:str hello
OK
> GET @L@:str
"hello"
> SET @L@:str "hello world"
OK
> GET @L@:str
"hello world"
> STRLEN @L@:str
(integer) 11
> GET @L@:missing
(nil)
> INCR @L@:ctr
(integer) 1
> INCR @L@:ctr
(integer) 2
> INCRBY @L@:ctr 40
(integer) 42
> DECR @L@:ctr
(integer) 41
> GET @L@:ctr
"41"
> SADD @L@:set pear apple fig
(integer) 3
> SADD @L@:set apple
(integer) 0
> SMEMBERS @L@:set
1) "apple"
2) "fig"
3) "pear"
> SCARD @L@:set
(integer) 3
> SISMEMBER @L@:set fig
(integer) 1
> SREM @L@:set fig
(integer) 1
> SMEMBERS @L@:set
1) "apple"
2) "pear"
> TYPE @L@:str
string
> TYPE @L@:ctr
string
> TYPE @L@:set
set
> TYPE @L@:missing
none
> INCR @L@:str
(error) ERR value is not an integer or out of range
> SADD @L@:str x
(error) WRONGTYPE Operation against a key holding the wrong kind of value
> GET @L@:set
(error) WRONGTYPE Operation against a key holding the wrong kind of value
> EXISTS @L@:str @L@:ctr @L@:set @L@:missing
(integer) 3
> DEL @L@:str @L@:ctr @L@:set @L@:missing
(integer) 3
> GET @L@:str
(nil)
> TYPE @L@:set
none
> SMEMBERS @L@:set
(empty array)
> SADD @L@:str now-a-set
(integer) 1
> TYPE @L@:str
set
> DEL @L@:str
(integer) 1
T
done

# The level is the connection's, set by the AUTH user name (`default`: the
# node's default_consistency, `local` as init writes it); CLIENT INFO shows
# it. (id, addresses and age vary: normalized to ID, ADDR, LADDR, AGE.)
session "the AUTH user name sets the level; AUTH again changes it" all \
  -p "$(port eu-west-1)" --user all --pass "$TOKEN" <<'T'
> CLIENT INFO
id=ID addr=ADDR laddr=LADDR name= age=AGE db=0 multi=-1 resp=2 user=all level=all lib-name= lib-ver=
> AUTH quorum @TOKEN@
OK
> CLIENT INFO
id=ID addr=ADDR laddr=LADDR name= age=AGE db=0 multi=-1 resp=2 user=quorum level=quorum lib-name= lib-ver=
> AUTH local wrong-token
(error) WRONGPASS invalid username-password pair or user is disabled.
> CLIENT INFO
id=ID addr=ADDR laddr=LADDR name= age=AGE db=0 multi=-1 resp=2 user=quorum level=quorum lib-name= lib-ver=
> AUTH default @TOKEN@
OK
> CLIENT INFO
id=ID addr=ADDR laddr=LADDR name= age=AGE db=0 multi=-1 resp=2 user=default level=local lib-name= lib-ver=
T

# Unknown commands: Redis's exact wording, which ends in a space. Commands
# that will stay unknown (lists, flushes, a made-up name), not ones that
# later work (hashes, expiry, SCAN: issue 15).
session "unknown commands get Redis's exact error" local \
  -p "$(port us-east-1)" --user local --pass "$TOKEN" <<'T'
> NOSUCHCOMMAND a b
(error) ERR unknown command 'NOSUCHCOMMAND', with args beginning with: 'a' 'b' 
> nosuchcommand
(error) ERR unknown command 'nosuchcommand', with args beginning with: 
> LPUSH @L@:list x
(error) ERR unknown command 'LPUSH', with args beginning with: 'local:list' 'x' 
> FLUSHALL
(error) ERR unknown command 'FLUSHALL', with args beginning with: 
> PING
PONG
T

# No password: everything but AUTH/HELLO/QUIT is NOAUTH, unknown commands
# too; AUTH then works on the same connection.
session "without a password: NOAUTH, then AUTH" local \
  -p "$(port ap-south-1)" <<'T'
> PING
(error) NOAUTH Authentication required.
> GET @L@:str
(error) NOAUTH Authentication required.
> NOSUCHCOMMAND
(error) NOAUTH Authentication required.
> HELLO 3
(error) NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time
> AUTH local wrong-token
(error) WRONGPASS invalid username-password pair or user is disabled.
> AUTH @TOKEN@
OK
> PING
PONG
T

# redis-cli's --user/--pass: a wrong token or an unknown user name is
# WRONGPASS (redis-cli reports it on stderr and goes on unauthenticated).
session "a wrong token: WRONGPASS" local \
  -p "$(port us-east-1)" --user local --pass wrong-token <<'T'
! AUTH failed: WRONGPASS invalid username-password pair or user is disabled.
> PING
(error) NOAUTH Authentication required.
T
session "an unknown user name: WRONGPASS, never a downgrade" local \
  -p "$(port us-east-1)" --user eventual --pass "$TOKEN" <<'T'
! AUTH failed: WRONGPASS invalid username-password pair or user is disabled.
> PING
(error) NOAUTH Authentication required.
T

# RESP3 (-3: redis-cli sends HELLO 3 after AUTH): maps, sets, nulls.
session "RESP3 (-3): HELLO map, set and null replies, MULTI/EXEC" quorum \
  -3 -p "$(port eu-west-1)" --user quorum --pass "$TOKEN" <<'T'
> HELLO 3
1# "server" => "redis"
2# "version" => "7.2.0"
3# "proto" => (integer) 3
4# "id" => (integer) ID
5# "mode" => "standalone"
6# "role" => "master"
7# "modules" => (empty array)
> SADD resp3:set b a
(integer) 2
> SMEMBERS resp3:set
1~ "a"
2~ "b"
> SMEMBERS resp3:none
(empty set)
> GET resp3:none
(nil)
> SMISMEMBER resp3:set a z
1) (integer) 1
2) (integer) 0
> CONFIG GET appendonly
1# "appendonly" => "yes"
> MULTI
OK
> INCR resp3:ctr
QUEUED
> SET resp3:str v
QUEUED
> GET resp3:str
QUEUED
> EXEC
1) (integer) 1
2) OK
3) "v"
> DEL resp3:set resp3:ctr resp3:str
(integer) 3
T

# RESP3 handshake with AUTH and SETNAME inside HELLO, on a fresh connection.
session "RESP3: HELLO 3 AUTH user pass SETNAME name" all \
  -3 -p "$(port ap-south-1)" <<'T'
! HELLO 3 failed: NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time
> HELLO 3 AUTH @L@ @TOKEN@ SETNAME smoke
1# "server" => "redis"
2# "version" => "7.2.0"
3# "proto" => (integer) 3
4# "id" => (integer) ID
5# "mode" => "standalone"
6# "role" => "master"
7# "modules" => (empty array)
> CLIENT GETNAME
"smoke"
> CLIENT INFO
id=ID addr=ADDR laddr=LADDR name=smoke age=AGE db=0 multi=-1 resp=3 user=all level=all lib-name= lib-ver=
T

# One command on the command line, as the README shows it.
session "a command on the command line" quorum \
  -p "$(port us-east-1)" --user quorum --pass "$TOKEN" SET cmdline:greeting hi <<'T'
OK
T

echo "redis-cli sessions: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
