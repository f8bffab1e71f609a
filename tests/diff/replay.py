"""Replays the transcripts against Herald outside pytest and prints a summary.

    python replay.py [--toml] [topic ...]

Starts Herald like the pytest suite does ($HERALD_BIN). Prints each differing case; with
--toml, prints differences.toml entries for them (a starting point: write the reason by hand).
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "py"))

from cases_load import load, load_transcript, topics  # noqa: E402
from harness import Target, compare, count_frames, run_case  # noqa: E402

from conftest import start_herald  # noqa: E402


def toml_value(v):
    return json.dumps(v, ensure_ascii=False)


def main(argv):
    as_toml = "--toml" in argv
    wanted = [a for a in argv[1:] if not a.startswith("--")] or topics()
    h = start_herald()
    n_cases = n_diff_cases = n_frames = n_diff_frames = 0
    try:
        target = Target("127.0.0.1", h.stomp_port, h.http_port, "/ws")
        for topic in wanted:
            recorded = {c["name"]: c for c in load_transcript(topic)["cases"]}
            for c in load(topic):
                rec = recorded[c["name"]]
                diffs = compare(rec, run_case(c, target, rec))
                n_cases += 1
                n_frames += count_frames(rec)[1]
                frames = {".".join(p.split(".")[:2]) for p, _, _ in diffs if ".f" in p}
                frames |= {p.split(".")[0] for p, _, _ in diffs if p.endswith(".frames") or p.endswith(".closed")}
                n_diff_frames += len(frames)
                if not diffs:
                    continue
                n_diff_cases += 1
                if as_toml:
                    print(f'[{topic}.{toml_value(c["name"])}]\nreason = "TODO"\ndiff = [')
                    for p, a, b in diffs:
                        hv = "" if b is None else f", herald = {toml_value(b)}"
                        print(f'  {{ path = "{p}"{hv} }},  # rabbitmq: {toml_value(a)[:150]}')
                    print("]\n")
                else:
                    print(f"{topic}/{c['name']}:")
                    for p, a, b in diffs:
                        print(f"  {p}: rabbitmq={toml_value(a)[:200]} herald={toml_value(b)[:200]}")
    finally:
        h.stop()
    print(f"# replay: {n_cases} cases, {n_diff_cases} differ; {n_frames} received frames recorded, "
          f"~{n_diff_frames} frames/closes differ", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
