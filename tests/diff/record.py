"""Records RabbitMQ's answers to every case into transcripts/<topic>.json.

Run through ./record, which starts the RabbitMQ this needs; by hand:
    python record.py HOST STOMP_PORT WS_PORT VERSION [topic ...]
"""

from __future__ import annotations

import json
import os
import sys
import time

from cases_load import TRANSCRIPTS_DIR, load, topics, transcript_path
from harness import NORMALISED, Target, count_frames, run_case


def main(argv):
    host, stomp_port, ws_port, version = argv[1], int(argv[2]), int(argv[3]), argv[4]
    wanted = argv[5:] or topics()
    target = Target(host, stomp_port, ws_port, "/ws")
    os.makedirs(TRANSCRIPTS_DIR, exist_ok=True)
    totals = [0, 0, 0]
    for topic in wanted:
        t0 = time.monotonic()
        out = []
        for c in load(topic):
            tr = run_case(c, target)
            out.append(tr)
            s, r = count_frames(tr)
            totals[0] += 1
            totals[1] += s
            totals[2] += r
        doc = {
            "topic": topic,
            "server": version,
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "normalised_headers": NORMALISED,
            "cases": out,
        }
        with open(transcript_path(topic), "w") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"record: {topic}: {len(out)} cases in {time.monotonic() - t0:.1f}s", flush=True)
    print(f"record: {totals[0]} cases, {totals[1]} frames sent, {totals[2]} frames received")


if __name__ == "__main__":
    main(sys.argv)
