"""The Debian package (scripts/package-deb) as dpkg and an operator see it.

HERALD_DEB names the .deb (scripts/test passes the one package-deb printed).
The package is inspected with dpkg-deb (control fields, conffiles, maintainer
scripts, file list and modes), unpacked with `dpkg-deb -x`, and its own
binary is run with its own config: `check-config` as shipped, then a server
from a copy of that config in which only what a test on a shared machine must
change is changed (listeners on 127.0.0.1 port 0, data_dir in a temporary
directory, one user whose hash the packaged binary made, one admin token).
A real STOMP client (stomp.py) and HTTP requests then talk to it.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import stomp

DEB = os.environ.get("HERALD_DEB", "")
if not DEB or not Path(DEB).is_file():
    raise RuntimeError(f"HERALD_DEB must name the .deb built by scripts/package-deb (got {DEB!r})")

UNIT = "herald.service"


def run(*args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def root():
    d = Path(tempfile.mkdtemp(prefix="herald-deb-"))
    r = run("dpkg-deb", "-x", DEB, str(d))
    assert r.returncode == 0, r.stderr
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def control():
    d = Path(tempfile.mkdtemp(prefix="herald-deb-control-"))
    r = run("dpkg-deb", "-e", DEB, str(d))
    assert r.returncode == 0, r.stderr
    yield d
    shutil.rmtree(d, ignore_errors=True)


def unit_path(root: Path) -> Path:
    for base in ("lib/systemd/system", "usr/lib/systemd/system"):
        p = root / base / UNIT
        if p.is_file():
            return p
    raise AssertionError(f"{UNIT} is not in the package")


def field(info: str, name: str) -> str:
    m = re.search(rf"^ {name}: (.*)$", info, re.M)
    assert m, f"no {name} field in:\n{info}"
    return m.group(1)


def test_control_fields():
    info = run("dpkg-deb", "--info", DEB).stdout
    assert field(info, "Package") == "herald"
    assert field(info, "Architecture") == "amd64"
    version = field(info, "Version")
    assert Path(DEB).name == f"herald_{version}_amd64.deb"
    depends = field(info, "Depends")
    # Computed from the binary's shared libraries (dpkg-shlibdeps), plus the postinst's adduser.
    assert re.search(r"\blibc6 \(>= [0-9.]+\)", depends), depends
    assert "adduser" in depends, depends
    assert field(info, "Section") == "net"


def test_conffiles_and_maintainer_scripts(control):
    assert (control / "conffiles").read_text().split() == ["/etc/herald/herald.toml"]
    postinst = (control / "postinst").read_text()
    assert "adduser --system" in postinst and "getent passwd herald" in postinst
    assert "CONF=/etc/herald/herald.toml" in postinst
    assert 'dpkg-statoverride --update --add root herald 0640 "$CONF"' in postinst
    # cargo-deb's systemd snippets: enable and start on configure.
    assert "deb-systemd-helper" in postinst and UNIT in postinst
    assert "deb-systemd-invoke" in postinst
    postrm = (control / "postrm").read_text()
    assert "dpkg-statoverride --remove /etc/herald/herald.toml" in postrm
    assert (control / "prerm").is_file(), "no prerm: the service would not be stopped on removal"
    for script in ("postinst", "postrm", "prerm"):
        p = control / script
        assert os.access(p, os.X_OK), f"{script} is not executable"
        r = run("sh", "-n", str(p))
        assert r.returncode == 0, f"{script}: {r.stderr}"


def test_contents():
    listing = run("dpkg-deb", "--contents", DEB).stdout
    entries = {}
    for line in listing.splitlines():
        parts = line.split()
        entries[parts[-1].removeprefix(".")] = (parts[0], parts[1].replace("root", "0"))
    assert entries["/usr/bin/herald"] == ("-rwxr-xr-x", "0/0")
    assert entries["/etc/herald/herald.toml"] == ("-rw-r--r--", "0/0")
    assert any(p.endswith("/systemd/system/" + UNIT) for p in entries), listing
    for doc in ("copyright", "changelog.Debian.gz", "install.md", "config.md", "security.md"):
        assert f"/usr/share/doc/herald/{doc}" in entries, listing


def test_binary_is_stripped(root):
    sections = run("readelf", "-S", "-W", str(root / "usr/bin/herald")).stdout
    assert ".text" in sections
    assert ".debug_info" not in sections and ".symtab" not in sections, "the packaged binary is not stripped"


def test_unit(root):
    text = unit_path(root).read_text()
    lines = {tuple(line.split("=", 1)) for line in text.splitlines() if "=" in line and not line.startswith("#")}
    for want in [
        ("ExecStart", "/usr/bin/herald --config /etc/herald/herald.toml"),
        ("User", "herald"),
        ("Group", "herald"),
        ("StateDirectory", "herald"),
        ("LimitNOFILE", "1048576"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("WantedBy", "multi-user.target"),
    ]:
        assert want in lines, f"{want[0]}={want[1]} missing from the unit"
    # Logs go to the journal: nothing redirects stdout/stderr elsewhere.
    assert "StandardOutput" not in text and "StandardError" not in text


def test_unit_verifies(root, tmp_path):
    """systemd-analyze verify, with ExecStart pointing at the unpacked binary (nothing is installed)."""
    unit = tmp_path / UNIT
    unit.write_text(unit_path(root).read_text().replace("/usr/bin/herald", str(root / "usr/bin/herald")))
    env = {**os.environ, "SYSTEMD_LOG_TARGET": "console"}
    r = run("systemd-analyze", "verify", str(unit), env=env)
    # A directive it cannot parse is only a message (exit 0 all the same): any line
    # naming the unit fails. The host's other units are not ours.
    ours = [line for line in (r.stdout + r.stderr).splitlines() if UNIT in line]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr
    # The sandbox as systemd rates it (0 = locked down, 10 = none); 1.5 when written.
    r = run("systemd-analyze", "security", "--offline=yes", str(unit), env=env)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout


def test_lintian_finds_no_errors():
    """Debian's own checks. Known warnings: no-manual-page (`herald --help` is the
    reference), initial-upload-closes-no-bugs (not an upload to the archive)."""
    r = subprocess.run(["lintian", "--fail-on", "error", DEB], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not re.search(r"^E: ", r.stdout, re.M), r.stdout


def test_packaged_config_is_safe(root):
    cfg = tomllib.loads((root / "etc/herald/herald.toml").read_text())
    assert cfg["node"]["data_dir"] == "/var/lib/herald"
    assert cfg["admin"]["listen"].startswith("127.0.0.1:"), "admin must be on loopback"
    assert cfg["admin"].get("tokens", []) == []
    assert not any("password" in u for u in cfg.get("users", [])), "no plain passwords"
    assert cfg["stomp"]["listen"] == "0.0.0.0:61613"
    assert cfg["http"]["listen"] == "0.0.0.0:15674"


def herald(root, *args, **kw):
    return run(str(root / "usr/bin/herald"), *args, **kw)


def test_check_config_as_shipped(root):
    conf = root / "etc/herald/herald.toml"
    r = herald(root, "--config", str(conf), "check-config")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"herald: config {conf} is valid"


def test_check_config_refuses_a_bad_config(root, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((root / "etc/herald/herald.toml").read_text() + "\n[stomp2]\nlisten = 1\n")
    r = herald(root, "--config", str(bad), "check-config")
    assert r.returncode == 2
    assert "stomp2" in r.stderr, r.stderr


def hash_of(root, password):
    r = herald(root, "hash-password", input=password + "\n")
    assert r.returncode == 0, r.stderr
    h = r.stdout.strip()
    assert h.startswith("$argon2id$"), h
    return h


def replace_once(text, old, new):
    assert text.count(old) == 1, f"the packaged config changed shape: {old!r} is not there exactly once"
    return text.replace(old, new)


class Listener(stomp.ConnectionListener):
    def __init__(self):
        self.messages = []
        self.errors = []

    def on_message(self, frame):
        self.messages.append(frame.body)

    def on_error(self, frame):
        self.errors.append(frame.body)


def test_serves_stomp_and_http(root, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    text = (root / "etc/herald/herald.toml").read_text()
    text = replace_once(text, 'data_dir = "/var/lib/herald"', f'data_dir = "{data}"')
    text = replace_once(text, 'listen = "0.0.0.0:61613"', 'listen = "127.0.0.1:0"')
    text = replace_once(text, 'listen = "0.0.0.0:15674"', 'listen = "127.0.0.1:0"')
    text = replace_once(text, 'listen = "127.0.0.1:15672"', 'listen = "127.0.0.1:0"')
    text = replace_once(text, "tokens = []", 'tokens = ["deb-test-admin-token"]')
    password_hash = hash_of(root, "s3cret-for-the-deb-test")
    text += f"""
[[users]]
name = "alice"
password_hash = "{password_hash}"
permissions = {{ "/" = {{ configure = ".*", write = ".*", read = ".*" }} }}
"""
    conf = tmp_path / "herald.toml"
    conf.write_text(text)
    assert herald(root, "--config", str(conf), "check-config").returncode == 0

    proc = subprocess.Popen(
        [str(root / "usr/bin/herald"), "--config", str(conf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HERALD_LOG": "info"},
    )
    try:
        addrs = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.match(r"herald: listening (\S+) (\S+)", line)
            if m:
                addrs[m.group(1)] = m.group(2)
            if line.strip() == "herald: ready":
                break
        else:
            raise AssertionError("no `herald: ready` within 20 s")
        assert proc.poll() is None, proc.stderr.read()
        assert {"stomp-tcp", "admin"} <= set(addrs), addrs
        http = next(a for n, a in addrs.items() if n not in ("stomp-tcp", "admin"))

        # STOMP over TCP with the user whose hash the packaged binary made.
        host, port = addrs["stomp-tcp"].rsplit(":", 1)
        conn = stomp.Connection12([(host, int(port))], heartbeats=(0, 0), vhost="/")
        listener = Listener()
        conn.set_listener("l", listener)
        conn.connect("alice", "s3cret-for-the-deb-test", wait=True)
        conn.subscribe("/queue/deb-test", id="1", ack="auto")
        conn.send("/queue/deb-test", "hello from the package", receipt="r1")
        deadline = time.monotonic() + 10
        while not listener.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        conn.disconnect()
        assert listener.messages == ["hello from the package"], listener.errors

        # A wrong password is refused.
        bad = stomp.Connection12([(host, int(port))], heartbeats=(0, 0), vhost="/")
        bad_listener = Listener()
        bad.set_listener("l", bad_listener)
        with pytest.raises(stomp.exception.ConnectFailedException):
            bad.connect("alice", "wrong", wait=True)
        bad.disconnect()

        # The admin API on loopback answers with the token, 401 without.
        req = urllib.request.Request(
            f"http://{addrs['admin']}/api/overview", headers={"Authorization": "Bearer deb-test-admin-token"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
            assert b"herald@localhost" in resp.read()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://{addrs['admin']}/api/overview", timeout=10)
        assert e.value.code == 401

        # SockJS's info answer on the Web-STOMP listener.
        with urllib.request.urlopen(f"http://{http}/stomp/info", timeout=10) as resp:
            assert resp.status == 200
            assert b'"websocket":true' in resp.read().replace(b" ", b"")

        # SIGTERM (what systemctl stop sends) stops it gracefully with exit 0.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "shutting down" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
