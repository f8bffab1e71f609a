#!/usr/bin/env python3
"""End-to-end test of the Herald Console desktop app (admin-app/src-tauri).

Starts a real `herald` (admin API + STOMP/TCP on free ports), holds a real STOMP session
for alice, starts Xvfb and tauri-driver (over WebKitWebDriver), and lets WebDriver launch
`herald-admin` with HERALD_ADMIN_URL/HERALD_ADMIN_TOKEN set, so the app connects at once.
Then it checks, through WebDriver and the X server:

1. the overview rendered: `[data-testid=overview]` exists, the node line names the node,
   "users online" and "sessions" are >= 1; a second user (bob) then connects and the count
   goes to 2 without a reload (the live stream works under the app's CSP);
2. the app's commands work through the real IPC and its ACL: profile_save / profiles_list /
   profile_delete / startup_profile, a rejected URL comes back as a string with the reason,
   profiles.json is written; a core command outside `core:default` is refused; an inline
   style attribute applies (CSP); navigator.language is usable under LANG=C.UTF-8;
3. the window is titled "Herald Console", and a screenshot of it taken from the X server
   with ImageMagick `import` (tests/artifacts/desktop-overview.png) is current and not blank:
   a magenta "fence" square added to the page must show up in a capture and then vanish
   from one (so the kept capture was painted after that), and the capture has many
   distinct colours with no single colour above 93 %;
4. the page logged no uncaught JavaScript error or CSP refusal (WebKit console on stdout).

Python standard library only. Every wait is bounded; the whole run takes well under a
minute once the binaries are built. Paths come from the environment (run.sh sets them):
HERALD_BIN, HERALD_ADMIN_BIN, TAURI_DRIVER, WEBKIT_WEBDRIVER, ARTIFACTS.
"""

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERALD_BIN = os.environ["HERALD_BIN"]
ADMIN_BIN = os.environ["HERALD_ADMIN_BIN"]
TAURI_DRIVER = os.environ["TAURI_DRIVER"]
WEBKIT_WEBDRIVER = os.environ["WEBKIT_WEBDRIVER"]
ARTIFACTS = os.environ["ARTIFACTS"]
SHOT = os.path.join(ARTIFACTS, "desktop-overview.png")
TITLE = "Herald Console"
NODE = "herald-desktop-test"


class Failure(Exception):
    pass


class Fatal(Failure):
    """A failure that waiting longer cannot fix: `wait_for` gives up at once."""


def log(msg):
    print(f"desktop: {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, fn, timeout, interval=0.25):
    """Calls fn until it returns a truthy value; fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Fatal:
            raise
        except Exception as e:  # noqa: BLE001 - reported if the wait times out
            last = e
        time.sleep(interval)
    raise Failure(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else ""))


class Procs:
    """Processes this test started; stopped in reverse order, by pid (process group)."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, log_path, **kw):
        out = open(log_path, "wb")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw)
        self.procs.append((name, p, out))
        return p

    def check_alive(self):
        for name, p, _ in self.procs:
            if p.poll() is not None:
                raise Failure(f"{name} exited early with status {p.returncode}")

    def stop_all(self):
        for name, p, out in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=5)
            out.close()


# --- herald ----------------------------------------------------------------------------


def start_herald(procs, tmp, token):
    cfg = os.path.join(tmp, "herald.toml")
    with open(cfg, "w") as f:
        f.write(
            f"""
[node]
name = "{NODE}"
data_dir = "{tmp}/data"

[stomp]
listen = "127.0.0.1:0"

[http]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
tokens = ["{token}"]

[[vhosts]]
name = "/"

[auth]
default_permissions = {{ "/" = {{ configure = ".*", write = ".*", read = ".*" }} }}

[[users]]
name = "alice"
password = "secret"

[[users]]
name = "bob"
password = "secret"

[[projects]]
id = "p1"
members = ["alice", "bob"]
"""
        )
    log_path = os.path.join(tmp, "herald.log")
    p = procs.start("herald", [HERALD_BIN, "--config", cfg], log_path, cwd=tmp)

    def ready():
        if p.poll() is not None:
            raise Fatal(f"herald exited with status {p.returncode}:\n{open(log_path).read()}")
        text = open(log_path, errors="replace").read()
        return text if "herald: ready" in text else None

    text = wait_for("herald to print 'herald: ready'", ready, 30)
    addrs = dict(re.findall(r"herald: listening (\S+) (\S+)", text))
    for need in ("admin", "stomp-tcp"):
        if need not in addrs:
            raise Failure(f"herald did not report a {need} listener:\n{text}")
    return addrs


def api(base, token, path):
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def stomp_connect(addr, user, password):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(
        f"CONNECT\naccept-version:1.0,1.1,1.2\nhost:/\nlogin:{user}\npasscode:{password}\nheart-beat:0,0\n\n\0".encode()
    )
    buf = b""
    while b"\0" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    if not buf.startswith(b"CONNECTED"):
        raise Failure(f"STOMP CONNECT as {user} failed: {buf[:300]!r}")
    s.settimeout(None)
    return s


# --- WebDriver (W3C, over HTTP) ---------------------------------------------------------


class WebDriver:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.sid = None

    def call(self, method, path, body=None, timeout=30, retry=True):
        """One W3C WebDriver command. Connection-level failures (the tauri-driver proxy now and
        then drops a connection) are retried twice when `retry` (queries, not actions)."""
        data = None if body is None else json.dumps(body).encode()
        url = self.base + (f"/session/{self.sid}" if self.sid and not path.startswith("/session") else "") + path
        for attempt in range(3 if retry else 1):
            req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    return json.load(r).get("value")
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace")
                raise Failure(f"WebDriver {method} {path}: HTTP {e.code}: {detail[:800]}") from None
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
                if not retry or attempt == 2:
                    raise Failure(f"WebDriver {method} {path}: {e}") from None
                log(f"WebDriver {method} {path}: {e}; retrying")
                time.sleep(0.3)

    def new_session(self, application, args):
        caps = {"capabilities": {"alwaysMatch": {"tauri:options": {"application": application, "args": args}}}}
        value = self.call("POST", "/session", caps, timeout=60, retry=False)
        self.sid = value["sessionId"]
        return value

    def delete_session(self):
        if self.sid:
            try:
                self.call("DELETE", "", timeout=10)
            except Exception as e:  # noqa: BLE001 - teardown
                log(f"delete session: {e}")
            self.sid = None

    def find(self, css):
        """The element matching `css`, or None."""
        try:
            v = self.call("POST", "/element", {"using": "css selector", "value": css}, timeout=10)
        except Failure as e:
            if "no such element" in str(e):
                return None
            raise
        return next(iter(v.values())) if v else None

    def text(self, element_id):
        """The element's textContent, provided it has a box on screen. (Not the WebDriver
        "Get Element Text" command: WebKitWebDriver's visibility atom calls the stat values,
        `overflow: hidden; text-overflow: ellipsis`, not displayed and returns "" for them,
        although they are plainly on screen.)"""
        rect = self.call("GET", f"/element/{element_id}/rect")
        if not rect or rect["width"] <= 0 or rect["height"] <= 0:
            return ""
        return self.call("GET", f"/element/{element_id}/property/textContent") or ""

    def script(self, js, *args):
        return self.call("POST", "/execute/sync", {"script": js, "args": list(args)})

    def async_script(self, js, *args):
        # Retried too: a dropped connection fails in tauri-driver before the request reaches
        # WebKitWebDriver (hyper "SendRequest ... connection reset"), so nothing ran twice.
        return self.call("POST", "/execute/async", {"script": js, "args": list(args)}, timeout=40)

    def title(self):
        return self.call("GET", "/title")


def testid(name):
    return f'[data-testid="{name}"]'


def number(text):
    m = re.search(r"\d[\d,]*", text or "")
    return int(m.group(0).replace(",", "")) if m else None


# --- the checks -------------------------------------------------------------------------

COMMANDS_JS = r"""
const done = arguments[arguments.length - 1];
const invoke = window.__TAURI_INTERNALS__.invoke;
const attempt = (p) => p.then((v) => ({ ok: v }), (e) => ({ err: typeof e === 'string' ? e : JSON.stringify(e) }));
(async () => {
  const r = {};
  r.startup = await attempt(invoke('startup_profile'));
  r.before = await attempt(invoke('profiles_list'));
  r.save = await attempt(invoke('profile_save', { profile: { name: 'desktop-test', url: 'http://127.0.0.1:9/', token: 'tok' } }));
  r.list = await attempt(invoke('profiles_list'));
  r.badUrl = await attempt(invoke('profile_save', { profile: { name: 'bad', url: 'localhost:15672', token: 'x' } }));
  r.badName = await attempt(invoke('profile_save', { profile: { name: '  ', url: 'http://h', token: 'x' } }));
  r.keep = await attempt(invoke('profile_save', { profile: { name: 'kept', url: 'https://herald.example', token: 'k' } }));
  r.del = await attempt(invoke('profile_delete', { name: 'desktop-test' }));
  r.delMissing = await attempt(invoke('profile_delete', { name: 'no-such-profile' }));
  // core:default grants only the default (mostly read-only) core permissions; set_title is not among them.
  r.denied = await attempt(invoke('plugin:window|set_title', { label: 'main', value: 'hijacked' }));
  r.unknown = await attempt(invoke('no_such_command'));
  // The CSP allows inline style attributes (the UI sets bar widths with style="width:…").
  const probe = document.createElement('div');
  probe.setAttribute('style', 'position: absolute; width: 37px; height: 1px');
  document.body.append(probe);
  r.styleAttr = probe.getBoundingClientRect().width;
  probe.remove();
  r.language = navigator.language;
  return r;
})().then(done, (e) => done({ fatal: String(e) }));
"""


def check_commands(wd, token, admin_url, config_home):
    r = wd.async_script(COMMANDS_JS)
    log(f"commands: {json.dumps(r)}")
    if "fatal" in r:
        raise Failure(f"invoking commands threw: {r['fatal']}")
    problems = []

    def expect(cond, what):
        if not cond:
            problems.append(what)

    startup = r["startup"].get("ok") or {}
    expect(
        startup == {"name": "desktop-ci", "url": admin_url, "token": token},
        f"startup_profile = {r['startup']}, expected desktop-ci / {admin_url}",
    )
    expect(r["before"].get("ok") == [], f"profiles_list on a fresh config dir = {r['before']}")
    want = [{"name": "desktop-test", "url": "http://127.0.0.1:9", "token": "tok"}]
    expect(r["save"].get("ok") == want, f"profile_save = {r['save']}")
    expect(r["list"].get("ok") == want, f"profiles_list after save = {r['list']}")
    expect("http:// or https://" in (r["badUrl"].get("err") or ""), f"bad URL not refused with a reason: {r['badUrl']}")
    expect("name" in (r["badName"].get("err") or ""), f"blank name not refused with a reason: {r['badName']}")
    kept = [{"name": "kept", "url": "https://herald.example", "token": "k"}]
    expect(r["del"].get("ok") == kept, f"profile_delete = {r['del']}")
    expect("no-such-profile" in (r["delMissing"].get("err") or ""), f"deleting a missing profile = {r['delMissing']}")
    expect("not allowed" in (r["denied"].get("err") or ""), f"set_title was not refused by the ACL: {r['denied']}")
    expect("err" in r["unknown"], f"an unknown command was accepted: {r['unknown']}")
    expect(r["styleAttr"] == 37, f"an inline style attribute was not applied (CSP?): width {r['styleAttr']}")
    expect(r["language"] == "en-US", f"navigator.language is {r['language']!r} under LANG=C.UTF-8, expected 'en-US'")
    path = os.path.join(config_home, "dev.herald.console", "profiles.json")
    try:
        on_disk = json.load(open(path))
    except (OSError, ValueError) as e:
        on_disk = f"unreadable: {e}"
    expect(on_disk == kept, f"{path} holds {on_disk}, expected {kept}")
    if problems:
        raise Failure("commands:\n  " + "\n  ".join(problems))


def wait_overview(wd, min_users):
    """Waits until the overview shows `min_users` users online; returns what it shows."""

    def state():
        login_error = wd.find(testid("login-error"))
        if login_error:
            text = wd.text(login_error)
            if text.strip():
                raise Fatal(f"the app shows its connect screen with an error: {text!r}")
        if not wd.find(testid("overview")):
            return None
        values = {}
        for key in ("overview-node", "users-online", "sessions"):
            el = wd.find(testid(key))
            values[key] = wd.text(el) if el else ""
        node = values["overview-node"]
        users, sessions = number(values["users-online"]), number(values["sessions"])
        if NODE in node and users is not None and users >= min_users and sessions is not None and sessions >= min_users:
            return {"node": node, "users_online": users, "sessions": sessions}
        return None

    try:
        return wait_for(f"the overview to show node {NODE!r} and >= {min_users} users online", state, 30, 0.5)
    except Failure as e:
        body = wd.script("return document.body ? document.body.innerText.slice(0, 600) : '(no body)'")
        raise Failure(f"{e}\npage text:\n{body}") from None


def window_id(display_env):
    def search():
        out = subprocess.run(
            ["xdotool", "search", "--name", f"^{TITLE}$"], env=display_env, capture_output=True, text=True
        ).stdout.split()
        for wid in out:
            geo = subprocess.run(
                ["xdotool", "getwindowgeometry", wid], env=display_env, capture_output=True, text=True
            ).stdout
            m = re.search(r"Geometry: (\d+)x(\d+)", geo)
            if m and int(m.group(1)) >= 400 and int(m.group(2)) >= 300:
                return wid
        return None

    return wait_for(f"an X window named {TITLE!r}", search, 20)


def analyse(path):
    """(width, height, distinct colours, share of the commonest colour, that colour)."""
    size = subprocess.run(["identify", "-format", "%w %h", path], capture_output=True, text=True, check=True).stdout.split()
    hist = subprocess.run(
        ["convert", path, "-format", "%c", "histogram:info:-"], capture_output=True, text=True, check=True
    ).stdout
    rows = [(int(m.group(1)), m.group(2)) for m in re.finditer(r"^\s*(\d+):.*?(#[0-9A-Fa-f]{6,8})", hist, re.M)]
    total = sum(n for n, _ in rows) or 1
    top = max(rows, default=(0, "?"))
    return int(size[0]), int(size[1]), len(rows), top[0] / total, top[1]


FENCE_JS = """
const d = document.createElement('div');
d.id = 'desktop-test-fence';
d.style.cssText = 'position:fixed;left:0;top:0;width:24px;height:24px;background:#ff00ff;z-index:2147483647';
document.body.append(d);
return true;
"""


def pixel(path, x, y):
    return subprocess.run(
        ["convert", path, "-format", f"%[hex:p{{{x},{y}}}]", "info:"], capture_output=True, text=True, check=True
    ).stdout.strip().upper()


def check_screenshot(wd, display_env):
    """Screenshots the window from the X server and checks it is the rendered page.

    WebKit paints in another process, and under load the X window can show a frame that is
    seconds old (once: "connecting" and 1 user while the DOM said 2). So first a fence: put a
    magenta square in the page's corner, wait until the X capture shows it, remove it, and
    keep the first capture in which it is gone: that frame was painted after the removal,
    so it shows the page as it is now.
    """
    wid = window_id(display_env)
    name = subprocess.run(["xdotool", "getwindowname", wid], env=display_env, capture_output=True, text=True).stdout.strip()
    if name != TITLE:
        raise Failure(f"window title is {name!r}, expected {TITLE!r}")

    def capture():
        subprocess.run(["import", "-window", wid, SHOT], env=display_env, check=True, timeout=30)
        return pixel(SHOT, 12, 12)

    wd.script(FENCE_JS)
    try:
        wait_for("the window to paint a change to the page (magenta fence)", lambda: capture() == "FF00FF", 20, 0.2)
    except Failure as e:
        shutil.copy(SHOT, os.path.join(ARTIFACTS, "desktop-overview-stale.png"))
        raise Fatal(f"{e}: the window does not repaint (last capture: desktop-overview-stale.png)") from None
    wd.script("document.getElementById('desktop-test-fence').remove(); return true;")
    wait_for("the window to paint the page without the fence", lambda: capture() != "FF00FF", 20, 0.2)

    w, h, colours, dominant, colour = analyse(SHOT)
    log(f"screenshot {SHOT}: {w}x{h}, {colours} colours, commonest {colour} covers {dominant:.1%}")
    if (w, h) != (1280, 800):
        raise Failure(f"window is {w}x{h}, expected 1280x800")
    # A blank page is 1-2 colours; the rendered overview (text, cards, charts) has hundreds.
    if colours < 64 or dominant > 0.93:
        raise Failure(f"the window looks blank: {colours} colours, {colour} covers {dominant:.1%}")


def main():
    started = time.monotonic()
    os.makedirs(ARTIFACTS, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="herald-desktop-")
    procs = Procs()
    wd = None
    socks = []
    ok = False
    try:
        token = secrets.token_hex(16)
        addrs = start_herald(procs, tmp, token)
        admin_url = f"http://{addrs['admin']}"
        log(f"herald: admin {admin_url}, stomp {addrs['stomp-tcp']}")
        socks.append(stomp_connect(addrs["stomp-tcp"], "alice", "secret"))
        wait_for("alice online in /api/overview", lambda: api(admin_url, token, "/api/overview")["users_online"] >= 1, 10)

        # X server on a free display number (-displayfd writes the number it took).
        rfd, wfd = os.pipe()
        xvfb = procs.start(
            "Xvfb",
            ["Xvfb", "-displayfd", str(wfd), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
            os.path.join(tmp, "xvfb.log"),
            pass_fds=(wfd,),
        )
        os.close(wfd)
        with os.fdopen(rfd) as r:
            display = ":" + wait_for("Xvfb display number", lambda: r.readline().strip(), 15)
        log(f"Xvfb {display} (pid {xvfb.pid})")
        config_home = os.path.join(tmp, "config")
        env = dict(
            os.environ,
            DISPLAY=display,
            XDG_CONFIG_HOME=config_home,
            XDG_DATA_HOME=os.path.join(tmp, "data-home"),
            XDG_CACHE_HOME=os.path.join(tmp, "cache"),
            HERALD_ADMIN_URL=admin_url + "/",
            HERALD_ADMIN_TOKEN=token,
            HERALD_ADMIN_WEBVIEW_LOG="1",
            TAURI_WEBVIEW_AUTOMATION="true",
            # No accessibility bus under Xvfb; without this GTK waits for it.
            NO_AT_BRIDGE="1",
        )
        env.pop("HERALD_ADMIN_PROFILE", None)
        # The C locale, as on most CI runners, so the app's navigator.language fix is always
        # exercised (WebKitGTK reports "C" there, which Intl and uPlot reject).
        env["LANG"] = "C.UTF-8"
        for k in ("LC_ALL", "LC_MESSAGES", "LANGUAGE"):
            env.pop(k, None)
        port, native = free_port(), free_port()
        app_log = os.path.join(ARTIFACTS, "desktop-app.log")
        procs.start(
            "tauri-driver",
            [TAURI_DRIVER, "--port", str(port), "--native-port", str(native), "--native-driver", WEBKIT_WEBDRIVER],
            app_log,
            env=env,
        )
        wd = WebDriver(port)
        # tauri-driver listens before the WebKitWebDriver it spawned does; until then it drops
        # every request. /status is proxied to WebKitWebDriver and has no side effect.
        wait_for("WebKitWebDriver behind tauri-driver", lambda: wd.call("GET", "/status", timeout=3, retry=False), 20)
        wd.new_session(ADMIN_BIN, ["--profile", "desktop-ci"])
        log(f"WebDriver session {wd.sid} ({time.monotonic() - started:.1f}s)")
        shown = wait_overview(wd, 1)
        log(f"overview: {shown}")
        title = wd.title()
        log(f"document title: {title!r}")

        # A second user connects: the count must follow without a reload (live stream).
        socks.append(stomp_connect(addrs["stomp-tcp"], "bob", "secret"))
        shown = wait_overview(wd, 2)
        log(f"overview after bob connected: {shown}")

        check_commands(wd, token, admin_url, config_home)
        check_screenshot(wd, env)
        # The capture was painted after the fence went away; the DOM still shows both users.
        shown = wait_overview(wd, 2)

        procs.check_alive()
        # WebKit writes "CONSOLE JS ERROR …" for uncaught errors, "CONSOLE SECURITY ERROR …"
        # for CSP refusals (both fail the test) and "CONSOLE ERROR/WARN/LOG …" for console.*
        # calls (only shown).
        console = [l for l in open(app_log, errors="replace") if "CONSOLE" in l]
        for line in console:
            log(f"page console: {line.rstrip()}")
        errors = [l for l in console if re.search(r"CONSOLE (JS|SECURITY) ERROR", l)]
        if errors:
            raise Failure("errors in the page's console:\n" + "".join(errors))
        ok = True
        log(f"PASS in {time.monotonic() - started:.1f}s")
    finally:
        if wd:
            wd.delete_session()
        for s in socks:
            s.close()
        procs.stop_all()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"logs kept in {tmp} (herald.log, xvfb.log) and {ARTIFACTS}/desktop-app.log")
    return 0


def on_term(signum, _frame):
    # run.sh's `timeout` sends SIGTERM: unwind so `finally` stops Xvfb, herald and the app.
    raise Failure(f"killed by signal {signum} (the run took too long)")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    try:
        sys.exit(main())
    except Failure as e:
        print(f"desktop: FAIL: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
