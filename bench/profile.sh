#!/usr/bin/env bash
# bench/profile.sh PROTO N: where Herald's idle-session memory goes. Runs
# $HERALD_BIN under `valgrind --tool=dhat`, opens N idle sessions of PROTO
# (stomp-tcp, stomp-ws, xmpp-ws, bosh) with the generator, stops the server
# and prints the largest allocation sites live at the heap's peak.
# Output: $BENCH_RUN/dhat-PROTO.json (open it in valgrind's dh_view.html).
set -euo pipefail
cd "$(dirname "$0")"
source ./lib.sh
PROTO=${1:-stomp-ws} N=${2:-2000}
BENCH=${BENCH:-$CARGO_TARGET_DIR/release/herald-bench}
HERALD_BIN=${HERALD_BIN:-$CARGO_TARGET_DIR/release/herald}
mkdir -p "$BENCH_RUN"
herald_config "$N" > "$BENCH_RUN/herald-profile.toml"
OUTF=$BENCH_RUN/dhat-$PROTO.json
valgrind --tool=dhat --dhat-out-file="$OUTF" "$HERALD_BIN" --config "$BENCH_RUN/herald-profile.toml" \
  > "$BENCH_RUN/herald-profile.out" 2> "$BENCH_RUN/herald-profile.log" &
VG=$!
for _ in $(seq 1 600); do grep -q 'herald: ready' "$BENCH_RUN/herald-profile.out" 2>/dev/null && break; sleep 0.2; done
case $PROTO in
  stomp-tcp) T=(--addr "127.0.0.1:$HERALD_STOMP") ;;
  stomp-ws) T=(--addr "127.0.0.1:$HERALD_HTTP" --path /ws) ;;
  xmpp-ws) T=(--addr "127.0.0.1:$HERALD_XHTTP" --path /xmpp-websocket) ;;
  bosh) T=(--addr "127.0.0.1:$HERALD_XHTTP" --path /http-bind) ;;
esac
"$BENCH" run --scenario s1 --server herald --proto "$PROTO" "${T[@]}" --ns "$N" --settle-secs 2 --idle-secs 2 \
  --concurrency 16 --per-worker 5000 --pid "$VG"
kill -TERM "$VG"; wait "$VG" || true
python3 - "$OUTF" "$N" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); n = int(sys.argv[2])
ftbl = d["ftbl"]
def frames(pp):
    """The innermost Herald (or regex/tungstenite/tokio) frames of a site."""
    keys = ("herald_core", "regex::", "tungstenite::", "tokio::runtime::task::core::Cell", "axum::", "bytes_mut", "quick_xml")
    out = []
    for i in pp["fs"]:
        f = ftbl[i]
        name = f.split(": ", 1)[-1]
        short = name.split(" (")[0][:70] + (" (" + name.split(" (")[-1] if " (" in name else "")
        if any(k in f for k in keys) and short not in out:
            out.append(short[:100])
        if len(out) >= 3:
            break
    return " <- ".join(out) or ftbl[pp["fs"][0]][:100]
def startup(pp):
    return any("from_config" in ftbl[i] or "Engine::new" in ftbl[i] for i in pp["fs"])
pps = sorted(d["pps"], key=lambda p: -p.get("gb", 0))
total = sum(p.get("gb", 0) for p in pps)
boot = sum(p.get("gb", 0) for p in pps if startup(p))
print(f"live at peak: {total/1024/1024:.1f} MiB; built at start (config users etc.): {boot/1024/1024:.1f} MiB;"
      f" the rest: {(total-boot)/n:.0f} B per session")
print("largest sites not built at start (per session = bytes / N):")
for p in [p for p in pps if not startup(p)][:14]:
    print(f"{p.get('gb',0)/1024:9.0f} KiB {p.get('gbk',0):7d} blocks {p.get('gb',0)/n:7.0f} B/session  {frames(p)}")
PY
