"""Users from the application's own MongoDB collection (`[auth.mongodb]`), end to end.

A MongoDB-wire server (SecantusDB's secantusd-py, on a temp storage dir so it can be
stopped and started again) holds a `users` collection as a Node app stores it:
`{username, password: "$2b$10$...", disabled, roles}`. The bcrypt hashes are made by the
npm `bcrypt` and `bcryptjs` packages (run with node from the tests workspace), the argon2
hash by argon2-cffi, the scrypt and PBKDF2 PHC strings by Python's hashlib. Logins go
through stomp.py (STOMP CONNECT) and slixmpp (SASL PLAIN over STARTTLS).

Checked: right password in, wrong out, disabled out, missing out; only PLAIN offered
(bcrypt hashes cannot do SCRAM); MongoDB stopped -> refused as unavailable (fail closed,
config users still in) and back when it returns; the cache keeps an old password for at
most its TTL. Nothing is skipped: a missing secantusd-py, node module or Python package fails.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time

import argon2
import pymongo
import pytest

from conftest import Client, start_herald
from xmpp_util import AuthFailed, RawC2S, Xmpp, c2s_port, run, xmpp_extra

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
VENV = os.environ.get("HERALD_VENV", "/var/tmp/herald-venv")
CACHE_TTL_MS = 1500
DB = "app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secantusd() -> str:
    for p in (os.path.join(VENV, "bin", "secantusd-py"), shutil.which("secantusd-py")):
        if p and os.access(p, os.X_OK):
            return p
    pytest.fail("secantusd-py not found: run tests/services/install.sh (tests never skip)", pytrace=False)


class Mongo:
    """secantusd-py on a fixed port and storage dir, so a restart keeps the users."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="herald-mongo-auth-")
        self.proc = None
        self.start()
        self.client = pymongo.MongoClient(f"mongodb://127.0.0.1:{self.port}/?directConnection=true", serverSelectionTimeoutMS=10000)
        self.users = self.client[DB]["users"]

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self):
        self.proc = subprocess.Popen(
            [secantusd(), "--host", "127.0.0.1", "--port", str(self.port), "--storage-path", self.dir, "--log-level", "WARNING"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"secantusd-py did not listen on {self.port} (exit {self.proc.poll()})")
                time.sleep(0.1)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def close(self):
        self.client.close()
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def node_hash(package: str, password: str, cost: int = 10) -> str:
    """A bcrypt hash made by the npm package, as a Node app would store it."""
    script = f"process.stdout.write(require({package!r}).hashSync(process.argv[1], {cost}))"
    out = subprocess.run(["node", "-e", script, password], cwd=TESTS, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"node {package}: {out.stderr}"
    return out.stdout


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode().rstrip("=")


def scrypt_phc(password: str) -> str:
    salt = os.urandom(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32)
    return f"$scrypt$ln=10,r=8,p=1${b64(salt)}${b64(h)}"


def pbkdf2_phc(password: str) -> str:
    salt = os.urandom(16)
    h = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10000, 32)
    return f"$pbkdf2-sha256$i=10000,l=32${b64(salt)}${b64(h)}"


HOG_HASH = "$argon2id$v=19$m=4294967295,t=1,p=1$1LteNc4ltt/K6p6dkHfAww$ZrD6otjwuunnVrXNGkVB0JtQpOrAO94SHQIOMEBeJ78"


@pytest.fixture(scope="module")
def mongo():
    m = Mongo()
    m.users.insert_many(
        [
            {"username": "nadia", "password": node_hash("bcrypt", "nadia-pw"), "roles": ["staff"]},
            {"username": "jonas", "password": node_hash("bcryptjs", "jonas-pw")},
            # The argon2 crate's (and OWASP's) parameters; argon2-cffi's default (64 MiB,
            # t=3, p=4) takes seconds in a debug build of herald.
            {"username": "argo", "password": argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash("argo-pw")},
            {"username": "scry", "password": scrypt_phc("scry-pw")},
            {"username": "pbk", "password": pbkdf2_phc("pbk-pw")},
            {"username": "gone", "password": node_hash("bcrypt", "gone-pw"), "disabled": True},
            {"username": "md5", "password": hashlib.md5(b"md5-pw").hexdigest()},
            {"username": "cachy", "password": node_hash("bcryptjs", "old-pw")},
            # Named like the config user `ops`, with another password: must open nothing.
            {"username": "ops", "password": node_hash("bcrypt", "mongo-ops-pw"), "roles": ["administrator"]},
            # 4 GiB of argon2 memory: refused before hashing (cost ceilings).
            {"username": "hog", "password": HOG_HASH},
        ]
    )
    yield m
    m.close()


@pytest.fixture(scope="module")
def herald(mongo):
    extra = "\n".join(
        [
            xmpp_extra(),
            "[login]",
            "max_failures_per_ip = 1000",
            "max_failures_per_user = 1000",
            "",
            "[auth.mongodb]",
            f'uri = "{mongo.uri}"',
            f'database = "{DB}"',
            'disabled_field = "disabled"',
            'tags_field = "roles"',
            "timeout_ms = 1000",
            f"cache_ttl_ms = {CACHE_TTL_MS}",
            "",
        ]
    )
    h = start_herald(users=[{"name": "ops", "password": "ops-pw"}], extra=extra)
    yield h
    h.stop()


def stomp_ok(herald, login, passcode):
    c = Client(herald, login=login, passcode=passcode)
    c.conn.disconnect()


def stomp_refused(herald, login, passcode) -> str:
    c = Client(herald, login=login, passcode=passcode, connect=False)
    c.connect(expect_error=True)
    err = c.error(timeout=5)
    return f"{err.headers.get('message')}: {err.body}"


async def xmpp_login(herald, user, password):
    c = Xmpp(c2s_port(herald), user, password=password, mech="PLAIN")
    await c.start()
    assert c.mechanism == "PLAIN"
    c.c.disconnect()
    return c


async def xmpp_refused(herald, user, password) -> str:
    c = Xmpp(c2s_port(herald), user, password=password, mech="PLAIN")
    with pytest.raises(AuthFailed):
        await c.start()
    assert c.failures, "no SASL <failure/> received"
    return c.failures[0]["condition"]


GOOD = [("nadia", "nadia-pw"), ("jonas", "jonas-pw"), ("argo", "argo-pw"), ("scry", "scry-pw"), ("pbk", "pbk-pw")]


@pytest.mark.parametrize("user,password", GOOD)
def test_stomp_login_with_each_hash_format(herald, user, password):
    stomp_ok(herald, user, password)
    msg = stomp_refused(herald, user, password + "x")
    assert f"Access refused for user '{user}'" in msg, msg


@pytest.mark.parametrize("user,password", GOOD)
def test_xmpp_sasl_plain_with_each_hash_format(herald, user, password):
    async def scenario():
        await xmpp_login(herald, user, password)
        assert await xmpp_refused(herald, user, "wrong") == "not-authorized"

    run(scenario())


@pytest.mark.parametrize(
    "user,password",
    [("gone", "gone-pw"), ("nobody", "whatever"), ("md5", "md5-pw")],
    ids=["disabled", "missing", "unknown-format"],
)
def test_refused_over_both_protocols(herald, user, password):
    msg = stomp_refused(herald, user, password)
    assert "Access refused" in msg, msg

    async def scenario():
        assert await xmpp_refused(herald, user, password) == "not-authorized"

    run(scenario())


def test_empty_password_is_refused(herald):
    assert "Access refused" in stomp_refused(herald, "nadia", "")
    raw = RawC2S(c2s_port(herald))  # slixmpp will not send an empty password
    try:
        raw.starttls()
        raw.open_stream()
        out = raw.auth_plain("nadia", "")
        # Herald's SASL PLAIN parser refuses an empty password before any source is asked.
        assert b"<failure" in out and b"malformed-request" in out, out
    finally:
        raw.close()


def test_only_plain_is_offered_and_only_after_starttls(herald):
    raw = RawC2S(c2s_port(herald))
    try:
        before = raw.starttls()
        assert b"<mechanism>" not in before, f"SASL offered before STARTTLS: {before!r}"
        feats = raw.open_stream()
        assert b"<mechanism>PLAIN</mechanism>" in feats, feats
        assert b"SCRAM" not in feats, f"SCRAM offered although bcrypt hashes cannot do it: {feats!r}"
        assert b"<success" in raw.auth_plain("nadia", "nadia-pw")
    finally:
        raw.close()


def test_tags_come_from_the_roles_field(herald):
    # `staff` is not `administrator`: the user gets the default permissions, and logs in.
    stomp_ok(herald, "nadia", "nadia-pw")


def test_cache_keeps_an_old_password_for_at_most_the_ttl(herald, mongo):
    stomp_ok(herald, "cachy", "old-pw")
    mongo.users.update_one({"username": "cachy"}, {"$set": {"password": node_hash("bcrypt", "new-pw")}})
    stomp_ok(herald, "cachy", "new-pw")  # not cached: read from MongoDB at once
    stomp_ok(herald, "cachy", "old-pw")  # still cached
    time.sleep(CACHE_TTL_MS / 1000 + 0.3)
    assert "Access refused" in stomp_refused(herald, "cachy", "old-pw")

    async def scenario():
        assert await xmpp_refused(herald, "cachy", "old-pw") == "not-authorized"
        await xmpp_login(herald, "cachy", "new-pw")

    run(scenario())


def test_mongodb_down_fails_closed_and_recovers(herald, mongo):
    time.sleep(CACHE_TTL_MS / 1000 + 0.3)  # nothing cached from earlier tests
    mongo.stop()
    try:
        t = time.monotonic()
        msg = stomp_refused(herald, "jonas", "jonas-pw")
        assert "unavailable" in msg and "users database unreachable" in msg, msg
        assert time.monotonic() - t < 4, "bounded by timeout_ms"
        assert "127.0.0.1" not in msg, f"driver details leaked to the client: {msg}"

        async def scenario():
            assert await xmpp_refused(herald, "jonas", "jonas-pw") == "temporary-auth-failure"

        run(scenario())
        stomp_ok(herald, "ops", "ops-pw")  # config users do not need MongoDB
        # Not a failed login: the throttle did not count it, and nothing was cached.
    finally:
        mongo.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            stomp_ok(herald, "jonas", "jonas-pw")
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    err = "".join(herald.stderr_chunks)
    assert "[auth.mongodb] unavailable; failing closed" in err, err[-2000:]


def test_unknown_hash_format_is_logged_once(herald):
    for _ in range(3):
        stomp_refused(herald, "md5", f"pw{_}")
    err = "".join(herald.stderr_chunks)
    assert err.count("unknown password hash format") == 1, err[-3000:]
    assert hashlib.md5(b"md5-pw").hexdigest() not in err, "the hash itself must not be logged"


def test_bcrypt_cost_10_login_latency(herald, mongo):
    """Prints what a STOMP login costs: uncached (one findOne + one bcrypt cost-10
    verification on the hashing pool) and cached. Run with -s to see it."""
    mongo.users.insert_one({"username": "lat", "password": node_hash("bcrypt", "lat-pw", 10)})
    t = time.monotonic()
    stomp_ok(herald, "lat", "lat-pw")
    uncached = time.monotonic() - t
    t = time.monotonic()
    stomp_ok(herald, "lat", "lat-pw")
    cached = time.monotonic() - t
    print(f"\nSTOMP CONNECT+DISCONNECT, bcrypt cost 10: uncached {uncached * 1000:.0f} ms, cached {cached * 1000:.0f} ms")
    assert cached < uncached


def test_a_mongodb_user_named_like_a_config_user_opens_nothing(herald):
    """`[[users]]` names are decided by `[[users]]` alone: MongoDB is not asked."""
    msg = stomp_refused(herald, "ops", "mongo-ops-pw")
    assert "Access refused for user 'ops'" in msg, msg
    stomp_ok(herald, "ops", "ops-pw")

    async def scenario():
        assert await xmpp_refused(herald, "ops", "mongo-ops-pw") == "not-authorized"
        await xmpp_login(herald, "ops", "ops-pw")

    run(scenario())


def test_an_over_ceiling_hash_is_refused_without_hashing(herald):
    t = time.monotonic()
    for i in range(3):
        assert "Access refused" in stomp_refused(herald, "hog", f"pw{i}")
    assert time.monotonic() - t < 5, "an argon2 m=4 GiB hash was verified"
    err = "".join(herald.stderr_chunks)
    assert err.count("argon2 hash too costly") == 1, err[-3000:]
    assert HOG_HASH not in err and "1LteNc4ltt" not in err, "the hash itself must not be logged"
