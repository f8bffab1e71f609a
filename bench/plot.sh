#!/usr/bin/env bash
# bench/plot.sh RESULTS.jsonl OUTDIR: draws RSS against sessions (S1) and
# latency against push rate (S3) as PNG, with matplotlib from PyPI in a venv
# ($BENCH_VENV, default /var/tmp/herald-bench-venv, made on first use).
set -euo pipefail
VENV=${BENCH_VENV:-/var/tmp/herald-bench-venv}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import matplotlib' 2> /dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q matplotlib
fi
exec "$VENV/bin/python" "$(dirname "$0")/plot.py" "$@"
