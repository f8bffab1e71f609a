"""Replay ejabberd's recorded answers (tests/xdiff/transcripts) against Herald.

Every case of tests/xdiff/flows runs against a Herald with the same users and
contacts (starttls off, as the recording ran ejabberd without TLS; the flows'
`tls` connections go to a second Herald with STARTTLS required); Herald's
answers, normalised the same way, must equal ejabberd's, except for the cases
listed in tests/xdiff/differences.json, whose diff must be exactly the one
listed there (a changed difference fails too). Re-record: tests/xdiff/record.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import start_herald
from xmpp_util import c2s_port, http_port, xmpp_extra

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "xdiff"))
import xdiff  # noqa: E402

CASES = xdiff.load_flows()
RECORDED = xdiff.load_transcripts()
DIFFERENCES = xdiff.load_differences()


@pytest.fixture(scope="module")
def herald_xmpp():
    h = start_herald(extra=xmpp_extra(starttls="off"))
    yield h
    h.stop()


@pytest.fixture(scope="module")
def herald_tls():
    """The flows' `tls` connections: STARTTLS required, Herald's default."""
    h = start_herald(extra=xmpp_extra(starttls="required"))
    yield h
    h.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_replay(herald_xmpp, herald_tls, case):
    rec = RECORDED.get(case.name)
    assert rec is not None, f"{case.name}: no transcript; run tests/xdiff/record {case.name}"
    assert rec["flow"] == case.digest(), f"{case.name}: the flow changed since it was recorded; run tests/xdiff/record {case.name}"
    runner = xdiff.Runner(c2s_port(herald_xmpp), http_port(herald_xmpp), c2s_port(herald_tls))
    expected = xdiff.renormalise(case, rec["steps"])
    got = runner.run(case, expect=expected)
    lines = xdiff.diff(expected, got)
    known = DIFFERENCES.get(case.name, {}).get("diff", [])
    dump = os.environ.get("XDIFF_DUMP")  # a path: append what differs (to write differences.json)
    if dump and lines:
        with open(dump, "a") as f:
            f.write(json.dumps({case.name: lines}) + "\n")
    if lines != known:
        msg = [f"{case.name} ({case.file}): Herald's answers differ from ejabberd's"]
        msg += ["  " + l for l in lines] or ["  (no difference now)"]
        if known:
            msg.append("differences.json expects:")
            msg += ["  " + l for l in known]
        msg.append("Herald's full answers:")
        msg.append(xdiff.show(got))
        pytest.fail("\n".join(msg), pytrace=False)


def test_differences_file_is_consistent():
    names = {c.name for c in CASES}
    for name, d in DIFFERENCES.items():
        assert name in names, f"differences.json lists {name!r}, which is no case"
        assert d.get("why", "").strip(), f"differences.json: {name} has no reason"
        assert d.get("diff"), f"differences.json: {name} lists no difference"
