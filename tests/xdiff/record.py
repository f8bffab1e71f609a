"""Record ejabberd's answers to every flow into transcripts/ (run by ./record).

Starts its own ejabberd node (`xdiff-<pid>@localhost`) from ejabberd.yml.in with
spool and logs in a temp dir, registers the users and their rosters with
ejabberdctl, runs the flows in file order, writes one JSON transcript per flow
file, and stops the node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import socket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xdiff  # noqa: E402

C2S_PORT = int(os.environ.get("XDIFF_C2S_PORT", "64501"))
HTTP_PORT = int(os.environ.get("XDIFF_HTTP_PORT", "64502"))
TLS_PORT = int(os.environ.get("XDIFF_TLS_PORT", "64503"))


def main(only: list[str]) -> int:
    tmp = tempfile.mkdtemp(prefix="xdiff-ejabberd-")
    os.chmod(tmp, 0o755)
    for d in ("spool", "logs"):
        os.makedirs(os.path.join(tmp, d))
    with open(os.path.join(xdiff.HERE, "ejabberd.yml.in")) as f:
        cfg = f.read().replace("@C2S_PORT@", str(C2S_PORT)).replace("@HTTP_PORT@", str(HTTP_PORT))
    cfg = cfg.replace("@TLS_PORT@", str(TLS_PORT)).replace("@CERT@", f"{tmp}/cert.pem")
    # A self-signed certificate for the STARTTLS-required listener (as Herald generates one).
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", f"{tmp}/key.pem", "-out", f"{tmp}/crt.pem"],
        check=True, capture_output=True,
    )
    with open(f"{tmp}/cert.pem", "w") as out:
        for part in ("crt.pem", "key.pem"):
            with open(f"{tmp}/{part}") as f:
                out.write(f.read())
    with open(os.path.join(tmp, "ejabberd.yml"), "w") as f:
        f.write(cfg)
    with open(os.path.join(tmp, "ejabberdctl.cfg"), "w") as f:
        f.write(f'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"\nEJABBERD_PID_PATH={tmp}/ejabberd.pid\n')
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "ejabberd", tmp], check=True)
    node = f"xdiff{os.getpid()}@localhost"
    ctl = ["ejabberdctl", "--config", f"{tmp}/ejabberd.yml", "--ctl-config", f"{tmp}/ejabberdctl.cfg",
           "--spool", f"{tmp}/spool", "--logs", f"{tmp}/logs", "--node", node]

    def run(*args, check=True):
        r = subprocess.run(ctl + list(args), cwd=tmp, capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise SystemExit(f"ejabberdctl {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    run("start")
    try:
        run("started")
        for u in xdiff.USERS:
            run("register", u, xdiff.DOMAIN, xdiff.PASSWORD)
        for project, members in xdiff.PROJECTS.items():
            for u in members:
                for v in members:
                    if u != v:
                        run("add_rosteritem", u, xdiff.DOMAIN, v, xdiff.DOMAIN, v, project, "both")
        for port in (C2S_PORT, HTTP_PORT, TLS_PORT):
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"ejabberd is not listening on {port}")
                    time.sleep(0.2)
        version = run("status").stdout.strip().splitlines()[-1]
        runner = xdiff.Runner(C2S_PORT, HTTP_PORT, TLS_PORT)
        by_file: dict[str, dict] = {}
        for case in xdiff.load_flows():
            if only and case.name not in only and case.file not in only:
                continue
            t0 = time.monotonic()
            steps = runner.run(case)
            n = sum(len(s["got"]) for s in steps)
            print(f"{case.file:22} {case.name:40} {n:3} answers  {time.monotonic() - t0:.1f}s", flush=True)
            by_file.setdefault(case.file, {})[case.name] = {"flow": case.digest(), "steps": steps}
        os.makedirs(xdiff.TRANSCRIPTS, exist_ok=True)
        for fn, cases in by_file.items():
            path = os.path.join(xdiff.TRANSCRIPTS, fn.replace(".flow", ".json"))
            old = {}
            if only and os.path.exists(path):
                with open(path) as f:
                    old = json.load(f)["cases"]
            old.update(cases)
            with open(path, "w") as f:
                json.dump({"server": version, "cases": old}, f, indent=1, sort_keys=False)
                f.write("\n")
            print(f"wrote {path}")
    finally:
        run("stop", check=False)
        for _ in range(50):
            if run("status", check=False).returncode != 0:
                break
            time.sleep(0.2)
        if os.environ.get("XDIFF_KEEP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
