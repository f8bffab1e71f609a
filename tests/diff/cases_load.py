"""Loads the frame scripts in cases/ (one module per topic, each with a CASES list)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CASES_DIR = os.path.join(HERE, "cases")
TRANSCRIPTS_DIR = os.path.join(HERE, "transcripts")

if HERE not in sys.path:
    sys.path.insert(0, HERE)


def topics():
    return sorted(f[:-3] for f in os.listdir(CASES_DIR) if f.endswith(".py") and not f.startswith("_"))


def load(topic):
    spec = importlib.util.spec_from_file_location(f"stomp_diff_cases_{topic}", os.path.join(CASES_DIR, topic + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    names = [c["name"] for c in mod.CASES]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"cases/{topic}.py: duplicate case names {sorted(dup)}")
    return mod.CASES


def transcript_path(topic):
    return os.path.join(TRANSCRIPTS_DIR, topic + ".json")


def load_transcript(topic):
    with open(transcript_path(topic)) as f:
        return json.load(f)
