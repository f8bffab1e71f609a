#!/usr/bin/env bash
# Herald's benchmark suite against RabbitMQ and ejabberd, all on loopback:
#   bench/compare.sh                      # everything (~25 min on 2 cores)
#   bench/compare.sh herald               # one server only (herald, rabbitmq, ejabberd)
#   bench/compare.sh durability           # D1 and R1 (issue 15): Herald against RabbitMQ
#   bench/compare.sh d1 | r1              # one of them
#   bench/compare.sh s6                   # issue 17: cross-node pushes and fan-out, 3 Herald
#                                         # nodes against 3 Socket.IO processes + Redis adapter (~5 min)
#   bench/compare.sh s5                   # issue 17: 300k idle sessions over 16 nodes + Redis (~10 min)
# Installs the peers from Debian when missing, starts every server itself as a
# plain process (no systemd), runs S1-S4, then prints the tables with
# Herald/peer ratios and draws the plots. Results: $BENCH_RUN/results-*.jsonl,
# $BENCH_RUN/report.md, docs/benchmarks-*.png.
#
# Sizes can be changed through the environment (defaults = the issue's):
#   NS=1000,5000,10000,18000 SUBS=10000 RATES=10000,50000,100000 IDLE_SECS=30
#   SETTLE_SECS=5 RATE_SECS=5 CHURN_SECS=10 BURST=100 PACED_RATE=5 PACED_SECS=10
# HERALD_BIN (default: $CARGO_TARGET_DIR/release/herald, built when missing).
# D1: D1_MESSAGES=20000 (pipelined, over D1_PUBLISHERS=4 with D1_WINDOW=64
# receipts outstanding each) D1_SERIAL=2000 (one publisher, one receipt at a
# time) PAYLOAD=100; R1: R1_MISSED=100 R1_REPEATS=50. Ports: BENCH_PORT_BASE.
# S6: SUBS=10000 S6_RATES=10000,20000,40000 RATE_SECS BURST PACED_RATE PACED_SECS.
# S5: S5_SESSIONS=300000 S5_NODES=(sessions / 19000, rounded up) S5_HOLD_SECS=300
# S5_VERIFY_RATE=5000 (one push to every session after the hold; 0 = none).
# S5/S6 ports: CLUSTER_PORT_BASE (default 64600, bench/lib.sh).
set -euo pipefail
cd "$(dirname "$0")"
source ./lib.sh

SERVERS=${*:-herald rabbitmq ejabberd}
NS=${NS:-1000,5000,10000,18000}
NMAX=$(echo "$NS" | tr ',' '\n' | sort -n | tail -1)
SUBS=${SUBS:-10000}
NUSERS=$(( NMAX > SUBS ? NMAX : SUBS ))
RATES=${RATES:-10000,50000,100000}
IDLE_SECS=${IDLE_SECS:-30} SETTLE_SECS=${SETTLE_SECS:-5} RATE_SECS=${RATE_SECS:-5}
CHURN_SECS=${CHURN_SECS:-10} BURST=${BURST:-100} PACED_RATE=${PACED_RATE:-5} PACED_SECS=${PACED_SECS:-10}

log "building the generator (release) in $CARGO_TARGET_DIR"
(cd "$REPO_DIR" && cargo build --release -q -p herald-bench)
BENCH=$CARGO_TARGET_DIR/release/herald-bench
HERALD_BIN=${HERALD_BIN:-$CARGO_TARGET_DIR/release/herald}
if [ ! -x "$HERALD_BIN" ]; then
  log "building herald (release)"
  (cd "$REPO_DIR" && cargo build --release -q -p herald-server)
fi
case "${*:-}" in s5 | s6) ;; *) ensure_packages ;; esac

mkdir -p "$BENCH_RUN"
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${RESULTS:-$BENCH_RUN/results-$STAMP.jsonl}   # RESULTS=file appends to an earlier run
ln -sf "$OUT" "$BENCH_RUN/results-latest.jsonl"
ROWS=$BENCH_RUN/rows-$STAMP.md
{
  echo "run $STAMP on $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(uname -sr)"
  echo "herald $("$HERALD_BIN" --version 2>/dev/null || echo '?') ($HERALD_BIN), git $(cd "$REPO_DIR" && git rev-parse --short HEAD)"
  # (never `rabbitmq-server --version`: Debian's wrapper starts a node)
  echo "$(dpkg-query -W -f='rabbitmq-server ${Version}' rabbitmq-server); $(dpkg-query -W -f='ejabberd ${Version}' ejabberd); $(dpkg-query -W -f='erlang-base ${Version}' erlang-base)"
  case "${*:-}" in s5 | s6)
    echo "$(redis-server --version | cut -d' ' -f1-3); node $(node --version); socket.io $(node -p 'require("./socketio/node_modules/socket.io/package.json").version' 2> /dev/null || echo '(not installed yet)'), @socket.io/redis-adapter $(node -p 'require("./socketio/node_modules/@socket.io/redis-adapter/package.json").version' 2> /dev/null || echo '?')" ;;
  esac
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$BENCH_RUN/machine-$STAMP.txt" >&2

SERVER_PID= LAUNCH_PID= RUNNING=
cleanup() {
  stop_nodes
  stop_redis
  case "$RUNNING" in
    herald) stop_herald ;;
    rabbitmq) stop_rabbitmq ;;
    ejabberd) stop_ejabberd ;;
  esac
}
trap cleanup EXIT

start() { RUNNING=$1; "start_$1" "$NUSERS"; log "$1 started (pid $SERVER_PID)"; }
stop() { "stop_$RUNNING"; RUNNING=; }

# One scenario; the row goes to the terminal and to $ROWS, the JSON to $OUT.
# A failed run is reported and the suite goes on.
run() {
  local t0=$SECONDS
  local pid=()
  [ -n "$SERVER_PID" ] && pid=(--pid "$SERVER_PID")
  if ! "$BENCH" run --out "$OUT" "${pid[@]}" --settle-secs "$SETTLE_SECS" "$@" | tee -a "$ROWS"; then
    log "FAILED: $*"
  fi
  log "($((SECONDS - t0)) s; load $(cut -d' ' -f1-3 /proc/loadavg))"
}

S1=(--scenario s1 --ns "$NS" --idle-secs "$IDLE_SECS")
S2=(--scenario s2 --dest /topic/bench --subscribers "$SUBS" --burst "$BURST" --paced-rate "$PACED_RATE" --paced-secs "$PACED_SECS")
S3=(--scenario s3 --subscribers "$SUBS" --rates "$RATES" --rate-secs "$RATE_SECS")
S4=(--scenario s4 --churn-secs "$CHURN_SECS" --churn-users "$SUBS")

H_TCP=(--server herald --proto stomp-tcp --addr "127.0.0.1:$HERALD_STOMP")
H_WS=(--server herald --proto stomp-ws --addr "127.0.0.1:$HERALD_HTTP" --path /ws)
H_XWS=(--server herald --proto xmpp-ws --addr "127.0.0.1:$HERALD_XHTTP" --path /xmpp-websocket)
H_BOSH=(--server herald --proto bosh --addr "127.0.0.1:$HERALD_XHTTP" --path /http-bind)
R_TCP=(--server rabbitmq --proto stomp-tcp --addr "127.0.0.1:$RABBIT_STOMP")
R_WS=(--server rabbitmq --proto stomp-ws --addr "127.0.0.1:$RABBIT_WS" --path /ws)
E_XWS=(--server ejabberd --proto xmpp-ws --addr "127.0.0.1:$EJ_HTTP" --path /ws)
E_BOSH=(--server ejabberd --proto bosh --addr "127.0.0.1:$EJ_HTTP" --path /bosh)

D1=(--scenario d1 --messages "${D1_MESSAGES:-20000}" --serial-messages "${D1_SERIAL:-2000}"
  --publishers "${D1_PUBLISHERS:-4}" --window "${D1_WINDOW:-64}" --payload "${PAYLOAD:-100}")
R1=(--scenario r1 --missed "${R1_MISSED:-100}" --repeats "${R1_REPEATS:-50}" --payload "${PAYLOAD:-100}")
# Durability (issue 15): each server fresh for each scenario, Herald with its
# data directory (fsync on, the default), RabbitMQ with durable queues.
durability() {
  local s
  HERALD_ADMIN=${HERALD_ADMIN:-$((HERALD_STOMP + 8))}
  for s in "$@"; do
    declare -n S=$s
    # RABBIT_FIRST=1 runs RabbitMQ first (alternate runs: the disk is shared)
    [ "${RABBIT_FIRST:-0}" = 1 ] && { start rabbitmq; run "${S[@]}" "${R_TCP[@]}"; stop; }
    start herald; run "${S[@]}" "${H_TCP[@]}" --metrics "127.0.0.1:$HERALD_ADMIN"; stop
    [ "${RABBIT_FIRST:-0}" = 1 ] || { start rabbitmq; run "${S[@]}" "${R_TCP[@]}"; stop; }
  done
}
# Issue 17, S6: pushes (to random users at S6_RATES) and fan-out (a burst of
# BURST to a topic/room every subscriber joined, then PACED_RATE msg/s) with
# the publisher on node 1 and SUBS subscribers on nodes 2 and 3; Herald
# (STOMP over WebSocket; the publisher on STOMP/TCP) against Socket.IO 4 with
# @socket.io/redis-adapter (3 Node processes, WebSocket), the same Redis;
# then each on one node/process (no Redis) for the single-node figures.
cluster_s6() {
  local common=(--scenario s6 --subscribers "$SUBS" --rates "${S6_RATES:-10000,20000,40000}" --rate-secs "$RATE_SECS"
    --burst "$BURST" --paced-rate "$PACED_RATE" --paced-secs "$PACED_SECS" --jwt-secret "$BENCH_JWT_SECRET"
    --redis "127.0.0.1:$REDIS_PORT")
  local herald=(--server herald --proto stomp-ws --path /ws --publisher stomp --dest2 /topic/bench)
  local sio=(--server socketio --proto socketio --publisher socketio --dest2 bench)
  start_redis
  start_herald_nodes 3 1
  run "${common[@]}" "${herald[@]}" --label "3 nodes" --addr "${NODE_STOMP[0]}" \
    --sub-addrs "$(joined "${NODE_HTTP[@]:1}")" --pids "$(joined "${NODE_PIDS[@]}")" --redis-pid "$REDIS_PID"
  stop_nodes
  start_socketio 3 1
  run "${common[@]}" "${sio[@]}" --label "3 nodes" --addr "${NODE_HTTP[0]}" \
    --sub-addrs "$(joined "${NODE_HTTP[@]:1}")" --pids "$(joined "${NODE_PIDS[@]}")" --redis-pid "$REDIS_PID"
  stop_nodes
  start_herald_nodes 1 0
  run "${common[@]}" "${herald[@]}" --label "1 node" --addr "${NODE_STOMP[0]}" --sub-addrs "${NODE_HTTP[0]}" \
    --pids "${NODE_PIDS[0]}" --src-base 20
  stop_nodes
  start_socketio 1 0
  run "${common[@]}" "${sio[@]}" --label "1 node" --addr "${NODE_HTTP[0]}" --sub-addrs "${NODE_HTTP[0]}" \
    --pids "${NODE_PIDS[0]}" --src-base 20
  stop_nodes
  stop_redis
}

# Issue 17, S5: S5_SESSIONS idle STOMP/TCP sessions (subscribed to their feed,
# heart-beats every 10 s) spread evenly over S5_NODES nodes (each under the
# 20,000 files a process may hold), logged in with JWTs; total RSS of the
# nodes and Redis, logins/s, sessions closed over the hold, then one push to
# every session from node 1 (each must arrive).
cluster_s5() {
  local sessions=${S5_SESSIONS:-300000}
  local nodes=${S5_NODES:-$(((sessions + 18999) / 19000))}
  start_redis
  start_herald_nodes "$nodes" 1
  run --scenario s5 --server herald --label "$nodes nodes" --proto stomp-tcp --addr "${NODE_STOMP[0]}" \
    --sub-addrs "$(joined "${NODE_STOMP[@]}")" --pids "$(joined "${NODE_PIDS[@]}")" --redis "127.0.0.1:$REDIS_PORT" \
    --redis-pid "$REDIS_PID" --sessions "$sessions" --hold-secs "${S5_HOLD_SECS:-300}" \
    --verify-rate "${S5_VERIFY_RATE:-5000}" --jwt-secret "$BENCH_JWT_SECRET"
  stop_nodes
  stop_redis
}

# (a few users are enough there: upub publishes, u0 recovers)
case "$SERVERS" in
  s5) SERVERS= CLUSTER_RUN=s5; cluster_s5 ;;
  s6) SERVERS= CLUSTER_RUN=s6; cluster_s6 ;;
  durability) SERVERS= NUSERS=10; durability D1 R1 ;;
  d1) SERVERS= NUSERS=10; durability D1 ;;
  r1) SERVERS= NUSERS=10; durability R1 ;;
esac

for server in $SERVERS; do
  case $server in
    herald)
      # A fresh server for each S1 protocol, so every fit starts from the same state.
      for p in H_TCP H_WS H_XWS H_BOSH; do
        declare -n P=$p; start herald; run "${S1[@]}" "${P[@]}"; stop
      done
      start herald; run "${S2[@]}" "${H_TCP[@]}"; stop
      start herald; run "${S3[@]}" "${H_TCP[@]}" --publisher stomp; stop
      start herald; run "${S3[@]}" "${H_XWS[@]}" --publisher xmpp --src-base 20; stop
      start herald
      run "${S4[@]}" "${H_TCP[@]}" --src-base 30
      run "${S4[@]}" "${H_XWS[@]}" --src-base 32
      run "${S4[@]}" "${H_BOSH[@]}" --src-base 34
      stop
      # In-process pushes: Herald inside Node (the npm package), engine.sendToUser.
      if [ ! -f "$REPO_DIR/node-binding/herald.linux-x64-gnu.node" ]; then
        log "building the Node addon (node node-binding/scripts/install.js)"
        (cd "$REPO_DIR" && node node-binding/scripts/install.js) || log "addon build failed: no in-process row"
      fi
      if [ -f "$REPO_DIR/node-binding/herald.linux-x64-gnu.node" ]; then
        SERVER_PID=
        run "${S3[@]}" --server herald --label inproc --proto stomp-tcp --addr "127.0.0.1:$HERALD_STOMP" --publisher node \
          --src-base 40 --spawn-server "exec node $BENCH_DIR/node/inproc.js --users $NUSERS --stomp 127.0.0.1:$HERALD_STOMP --data $BENCH_RUN/node-data 2> $BENCH_RUN/node.log"
      fi
      ;;
    rabbitmq)
      start rabbitmq; run "${S1[@]}" "${R_TCP[@]}"; stop
      start rabbitmq; run "${S1[@]}" "${R_WS[@]}"; stop
      start rabbitmq; run "${S2[@]}" "${R_TCP[@]}"; stop
      # S3 leaves RabbitMQ draining a backlog long after the run: S4 gets a fresh node.
      start rabbitmq; run "${S3[@]}" "${R_TCP[@]}" --publisher stomp; stop
      start rabbitmq; run "${S4[@]}" "${R_TCP[@]}" --src-base 36; stop
      ;;
    ejabberd)
      start ejabberd; run "${S1[@]}" "${E_XWS[@]}"; stop
      start ejabberd; run "${S1[@]}" "${E_BOSH[@]}"; stop
      start ejabberd; run "${S3[@]}" "${E_XWS[@]}" --publisher xmpp --src-base 20; stop
      start ejabberd; run "${S4[@]}" "${E_XWS[@]}" --src-base 38; stop
      ;;
    *) die "unknown server $server (herald, rabbitmq, ejabberd)" ;;
  esac
done

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$BENCH_RUN/machine-$STAMP.txt" >&2
"$BENCH" report "$OUT" | tee "$BENCH_RUN/report.md"
# (no plots from a durability run: they would overwrite S1's and S3's with nothing)
if [ -n "$SERVERS" ] && "$BENCH_DIR/plot.sh" "$OUT" "$REPO_DIR/docs"; then
  log "plots: docs/benchmarks-rss.png, docs/benchmarks-latency.png"
fi
if [ -n "${CLUSTER_RUN:-}" ] && "$BENCH_DIR/plot.sh" "$OUT" "$REPO_DIR/docs"; then
  log "plot: docs/benchmarks-$CLUSTER_RUN.png"
fi
log "results: $OUT, tables: $BENCH_RUN/report.md"
