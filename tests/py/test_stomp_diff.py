"""Replays RabbitMQ 3.10's recorded STOMP answers (tests/diff/transcripts) against Herald.

Each case of tests/diff/cases/*.py runs against a fresh-per-module Herald (guest/guest on
vhost "/", as the recording's broker) over raw TCP or WebSocket, and its answers are compared
frame by frame with RabbitMQ's: command, every header (server-specific values normalised, see
harness.NORMALISED), body, and whether the server closed the connection. A case that differs
fails with the differences listed, unless tests/diff/differences.toml lists exactly those
differences for it (kept on purpose, or `pending` a fix in another branch): then the case
fails when Herald's answer changes in any way, including when it starts to agree.

Re-record with tests/diff/record (needs RabbitMQ; not part of CI).
"""

from __future__ import annotations

import json
import os
import sys

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import pytest

DIFF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "diff")
sys.path.insert(0, DIFF_DIR)

from cases_load import load, load_transcript, topics  # noqa: E402
from harness import Target, compare, run_case  # noqa: E402

from conftest import start_herald  # noqa: E402

with open(os.path.join(DIFF_DIR, "differences.toml"), "rb") as _f:
    DIFFERENCES = tomllib.load(_f)


def _expected(topic, name):
    """The kept differences listed for a case: {path: herald_value}, and the entry."""
    entry = DIFFERENCES.get(topic, {}).get(name)
    if entry is None:
        return None, None
    return {d["path"]: d.get("herald") for d in entry["diff"]}, entry


def _params():
    out = []
    for topic in topics():
        recorded = {c["name"]: c for c in load_transcript(topic)["cases"]}
        for c in load(topic):
            out.append(pytest.param(topic, c, recorded.get(c["name"]), id=f"{topic}/{c['name']}"))
    return out


def _show(v):
    return json.dumps(v, ensure_ascii=False)


@pytest.fixture(scope="module")
def herald_diff():
    h = start_herald()
    yield h
    h.stop()


def test_every_listed_difference_names_a_case():
    known = {(t, c["name"]) for t in topics() for c in load(t)}
    for topic, cases in DIFFERENCES.items():
        for name, entry in cases.items():
            assert (topic, name) in known, f"differences.toml: [{topic}.{name!r}] names no case"
            assert entry.get("reason"), f"differences.toml: [{topic}.{name!r}] has no reason"
            assert entry.get("diff"), f"differences.toml: [{topic}.{name!r}] lists no difference"


@pytest.mark.parametrize("topic,case,recorded", _params())
def test_replay(herald_diff, topic, case, recorded):
    assert recorded is not None, f"{topic}/{case['name']} has no transcript: re-record with tests/diff/record"
    target = Target("127.0.0.1", herald_diff.stomp_port, herald_diff.http_port, "/ws")
    replayed = run_case(case, target, recorded)
    diffs = compare(recorded, replayed)
    got = {path: herald for path, _, herald in diffs}
    expected, entry = _expected(topic, case["name"])
    if expected is None:
        if diffs:
            lines = [f"{topic}/{case['name']} ({case['doc']}) differs from RabbitMQ 3.10:"]
            lines += [f"  {p}: rabbitmq={_show(a)} herald={_show(b)}" for p, a, b in diffs]
            pytest.fail("\n".join(lines), pytrace=False)
        return
    if got != expected:
        kind = f"pending {entry['pending']}" if entry.get("pending") else "kept"
        lines = [f"{topic}/{case['name']}: the {kind} difference in differences.toml is no longer exactly what Herald answers"]
        if not diffs:
            lines.append("  Herald now answers as RabbitMQ does: remove the entry from tests/diff/differences.toml")
        for p in sorted(set(got) | set(expected)):
            if got.get(p, "<none>") != expected.get(p, "<none>") or (p in got) != (p in expected):
                rmq = next((a for q, a, _ in diffs if q == p), "<same as herald>")
                lines.append(f"  {p}: listed herald={_show(expected.get(p, '<not listed>'))} "
                             f"now herald={_show(got.get(p, '<agrees>'))} rabbitmq={_show(rmq)}")
        pytest.fail("\n".join(lines), pytrace=False)
