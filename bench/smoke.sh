#!/usr/bin/env bash
# CI's smoke run of the benchmark tool (seconds): every scenario at tiny N
# against Herald only, with --strict (a failed login, a lost message or a
# crash fails the run). Numbers are meaningless here; only that the tool works.
#   HERALD_BIN   the server (default: $CARGO_TARGET_DIR/release/herald, else debug/herald, else built)
#   CARGO_TARGET_DIR  default /var/tmp/herald-bench-target
set -euo pipefail
cd "$(dirname "$0")"
BENCH_RUN=${BENCH_RUN:-/var/tmp/herald-bench-smoke}
source ./lib.sh

(cd "$REPO_DIR" && cargo build -q -p herald-bench)
BENCH=$CARGO_TARGET_DIR/debug/herald-bench
if [ -z "${HERALD_BIN:-}" ]; then
  for b in "$CARGO_TARGET_DIR/release/herald" "$CARGO_TARGET_DIR/debug/herald"; do
    [ -x "$b" ] && { HERALD_BIN=$b; break; }
  done
fi
if [ -z "${HERALD_BIN:-}" ]; then
  (cd "$REPO_DIR" && cargo build -q -p herald-server)
  HERALD_BIN=$CARGO_TARGET_DIR/debug/herald
fi
mkdir -p "$BENCH_RUN"
OUT=$BENCH_RUN/smoke.jsonl
: > "$OUT"

SERVER_PID=
trap 'stop_herald' EXIT
start_herald 40

run() {
  local pid=()
  [ -n "$SERVER_PID" ] && pid=(--pid "$SERVER_PID")
  "$BENCH" run --strict --out "$OUT" "${pid[@]}" --server herald "$@"
}
TCP=(--proto stomp-tcp --addr "127.0.0.1:$HERALD_STOMP")
WS=(--proto stomp-ws --addr "127.0.0.1:$HERALD_HTTP" --path /ws)
XWS=(--proto xmpp-ws --addr "127.0.0.1:$HERALD_XHTTP" --path /xmpp-websocket)
BOSH=(--proto bosh --addr "127.0.0.1:$HERALD_XHTTP" --path /http-bind)
S1=(--scenario s1 --ns 10,20 --settle-secs 0.2 --idle-secs 1 --per-worker 10)

run "${S1[@]}" "${TCP[@]}"
run "${S1[@]}" "${WS[@]}"
run "${S1[@]}" "${XWS[@]}"
run "${S1[@]}" "${BOSH[@]}"
run --scenario s2 "${TCP[@]}" --dest /topic/bench --subscribers 20 --burst 5 --paced-rate 5 --paced-secs 1
run --scenario s3 "${TCP[@]}" --subscribers 20 --rates 200 --rate-secs 1
run --scenario s3 "${XWS[@]}" --subscribers 20 --rates 200 --rate-secs 1 --publisher xmpp
run --scenario s4 "${TCP[@]}" --churn-users 20 --churn-secs 1 --churn-concurrency 4
run --scenario s4 "${XWS[@]}" --churn-users 20 --churn-secs 1 --churn-concurrency 4
run --scenario s4 "${BOSH[@]}" --churn-users 20 --churn-secs 1 --churn-concurrency 4
# Durability (issue 15): receipted persistent SENDs all stored.
run --scenario d1 "${TCP[@]}" --messages 200 --serial-messages 20 --publishers 2 --window 8
# and 100 messages missed on u0's feed, recovered from history, 3 rounds
run --scenario r1 "${TCP[@]}" --missed 100 --repeats 3
stop_herald

# In-process pushes from the Node addon, when it is built (scripts/test builds it).
if [ -f "$REPO_DIR/node-binding/herald.linux-x64-gnu.node" ] && command -v node > /dev/null; then
  "$BENCH" run --strict --out "$OUT" --server herald --label inproc "${TCP[@]}" --scenario s3 --publisher node \
    --subscribers 20 --rates 200 --rate-secs 1 \
    --spawn-server "exec node $BENCH_DIR/node/inproc.js --users 40 --stomp 127.0.0.1:$HERALD_STOMP --data $BENCH_RUN/node-data 2> $BENCH_RUN/node.log"
else
  echo "bench smoke: S3 in-process skipped (Node addon not built)"
fi

# Issue 17, at tiny sizes (~20 s): S6 with the publisher on one of 3 nodes and
# the subscribers on the others, Herald and Socket.IO + Redis adapter
# (bench/socketio, `npm ci` there when missing), and S5 over 3 nodes with a
# 3 s hold (the real one holds 5 minutes) and one push to every session after it.
command -v redis-server > /dev/null || die "redis-server missing (tests/services/install.sh)"
NODE_PIDS=()
trap 'stop_herald; stop_nodes; stop_redis' EXIT
start_redis
S6=(--scenario s6 --subscribers 40 --per-worker 20 --rates 200 --rate-secs 1 --burst 5 --paced-rate 5 --paced-secs 1
  --jwt-secret "$BENCH_JWT_SECRET" --redis "127.0.0.1:$REDIS_PORT" --redis-pid "$REDIS_PID" --src-base 60)
start_herald_nodes 3 1
run "${S6[@]}" --proto stomp-ws --path /ws --publisher stomp --dest2 /topic/bench --label "3 nodes" --addr "${NODE_STOMP[0]}" \
  --sub-addrs "$(joined "${NODE_HTTP[@]:1}")" --pids "$(joined "${NODE_PIDS[@]}")"
run --scenario s5 --label "3 nodes" --proto stomp-tcp --addr "${NODE_STOMP[0]}" --sub-addrs "$(joined "${NODE_STOMP[@]}")" \
  --pids "$(joined "${NODE_PIDS[@]}")" --redis "127.0.0.1:$REDIS_PORT" --redis-pid "$REDIS_PID" --sessions 90 \
  --per-worker 15 --hold-secs 3 --settle-secs 0.2 --verify-rate 500 --jwt-secret "$BENCH_JWT_SECRET" --src-base 70
stop_nodes
start_socketio 3 1
"$BENCH" run --strict --out "$OUT" --server socketio "${S6[@]}" --proto socketio --publisher socketio --dest2 bench \
  --label "3 nodes" --addr "${NODE_HTTP[0]}" --sub-addrs "$(joined "${NODE_HTTP[@]:1}")" --pids "$(joined "${NODE_PIDS[@]}")"
node "$BENCH_DIR/socketio/check.js" "$(sio_port 0)" "$(sio_port 1)"
stop_nodes
stop_redis

"$BENCH" report "$OUT" > "$BENCH_RUN/report.md"
echo "bench smoke: every scenario ran ($(wc -l < "$OUT") results, tables in $BENCH_RUN/report.md)"
