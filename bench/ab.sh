#!/usr/bin/env bash
# bench/ab.sh LABEL HERALD_BIN BENCH_DIR OUT: Herald alone, S1-S4 at reduced
# sizes (S1 at NS, default 1000,5000,10000; S3 at 10k and 50k/s), for an A/B
# of two builds on one machine. BENCH_DIR is the bench/ folder of the build's
# own checkout (its lib.sh writes a config that build accepts); OUT collects
# the JSON rows (`herald-bench report OUT` prints the tables). Alternate the
# two builds and compare ratios: absolute numbers move with the machine.
# Example (before/after a change):
#   git worktree add /tmp/before <rev>; build both in release, then
#   bench/ab.sh before /tmp/before-herald /tmp/before/bench /tmp/ab-before.jsonl
#   bench/ab.sh after target/release/herald bench /tmp/ab-after.jsonl
set -euo pipefail
LABEL=$1; export HERALD_BIN=$2; BDIR=$3; OUT=$4
cd "$BDIR"
export BENCH_RUN=/var/tmp/herald-ab-$LABEL
source ./lib.sh
BENCH=${BENCH:-${CARGO_TARGET_DIR:-/var/tmp/herald-bench-target}/release/herald-bench}
NS=${NS:-1000,5000,10000}; SUBS=${SUBS:-10000}; NUSERS=10000
SERVER_PID=
trap 'stop_herald || true' EXIT
run() { "$BENCH" run --out "$OUT" --pid "$SERVER_PID" --settle-secs 3 "$@" || echo "FAILED $*" >&2; }
S1=(--scenario s1 --ns "$NS" --idle-secs 10)
H_TCP=(--server herald --proto stomp-tcp --addr "127.0.0.1:$HERALD_STOMP")
H_WS=(--server herald --proto stomp-ws --addr "127.0.0.1:$HERALD_HTTP" --path /ws)
H_XWS=(--server herald --proto xmpp-ws --addr "127.0.0.1:$HERALD_XHTTP" --path /xmpp-websocket)
H_BOSH=(--server herald --proto bosh --addr "127.0.0.1:$HERALD_XHTTP" --path /http-bind)
for p in H_TCP H_WS H_XWS H_BOSH; do
  declare -n P=$p; start_herald $NUSERS; run "${S1[@]}" "${P[@]}"; stop_herald
done
start_herald $NUSERS; run --scenario s2 --dest /topic/bench --subscribers $SUBS --burst 100 --paced-rate 5 --paced-secs 10 "${H_TCP[@]}"; stop_herald
start_herald $NUSERS; run --scenario s3 --subscribers $SUBS --rates 10000,50000 --rate-secs 5 "${H_TCP[@]}" --publisher stomp; stop_herald
start_herald $NUSERS; run --scenario s3 --subscribers $SUBS --rates 10000,50000 --rate-secs 5 "${H_XWS[@]}" --publisher xmpp --src-base 20; stop_herald
start_herald $NUSERS
run --scenario s4 --churn-secs 10 --churn-users $SUBS "${H_TCP[@]}" --src-base 30
run --scenario s4 --churn-secs 10 --churn-users $SUBS "${H_XWS[@]}" --src-base 32
run --scenario s4 --churn-secs 10 --churn-users $SUBS "${H_BOSH[@]}" --src-base 34
stop_herald
