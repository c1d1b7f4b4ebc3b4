"""pip_packages end to end (architecture section 4): the real server, the
real builder and the host's real pip against a local PEP 503 index on
127.0.0.1 (pkgindex.py). Validation, the content-addressed environment
cache (sharing, single flight, failures remembered, cancellation, killed
builds, eviction, restart), isolation, progress and the pip configuration
the server imposes."""
from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from clientlib import runner
from h2raw import H2Client, Response, grpc_frame
from pkgindex import PackageIndex, build_test_packages, build_wheel
from remotemedia.core.exceptions import InstallError, RemoteExecutionError
from remotemedia.remote import RemoteProxyClient, wire
from remotemedia.remote.session import SESSION_METHOD
from remotemedia.remote.wire import pb
from serverlib import Server, wait_for

BUILDING = re.compile(r"environment [0-9a-f]{12}: building \[")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


run = runner(90.0)


class Probe:
    """The remote object: looks at its environment from the inside.

    Everything it uses is imported inside the methods, so that nothing of
    this module's globals travels with it."""

    def path0(self):
        import sys
        return sys.path[0]

    def call(self, module, func):
        import importlib
        return getattr(importlib.import_module(module), func)()

    def attr(self, module, name):
        import importlib
        return getattr(importlib.import_module(module), name)

    def imp(self, module):
        import importlib
        importlib.import_module(module)
        return True

    def can_import(self, module):
        import importlib
        try:
            importlib.import_module(module)
        except ImportError:
            return False
        return True

    def getenv(self, name):
        import os
        return os.environ.get(name)

    def sys_path(self):
        import sys
        return list(sys.path)

    def adder(self, n):
        """A function of its own, which only cloudpickle sends."""
        return lambda x: x + n


async def open_probe(srv: Server, reqs, progress=None, **kw):
    """A connected client and a Probe proxy in a session with `reqs`."""
    client = RemoteProxyClient(srv.config(pip_packages=reqs, **kw))
    await client.connect()
    try:
        proxy = await client.create_proxy(Probe(), progress=progress)
    except BaseException:
        await client.disconnect()
        raise
    return client, proxy


async def with_probe(srv: Server, reqs, fn, **kw):
    client, proxy = await open_probe(srv, reqs, **kw)
    try:
        return await fn(proxy)
    finally:
        await client.disconnect()


def builds(srv: Server) -> int:
    """How many builds the server has started so far."""
    return len(BUILDING.findall(srv.log_text()))


def envs_dir(srv: Server) -> Path:
    return Path(srv.state_dir) / "envs"


def entry_of(site_packages: str) -> Path:
    """The cache entry of a session's sys.path[0] (.../KEY/venv/lib/pythonX.Y/site-packages)."""
    p = Path(site_packages)
    assert p.name == "site-packages", p
    assert p.parent.parent.name == "lib" and p.parents[2].name == "venv", p
    return p.parents[3]


def entries(cache: Path) -> dict[str, bool]:
    """Entry name -> has a `complete` marker. Dot names (the server's own
    scratch, e.g. a trash dir) are not entries: the server skips them too."""
    try:
        names = os.listdir(cache)
    except FileNotFoundError:
        return {}
    return {n: (cache / n / "complete").exists() for n in names if not n.startswith(".")}


def procs_matching(text: str) -> list[int]:
    """Live processes whose command line contains `text` (not zombies)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and st != "Z" and int(pid) != os.getpid():
            out.append(int(pid))
    return out


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def builder_pids(cache: Path) -> list[int]:
    """The builders (`remotemedia-worker --build-env DIR`) of one cache: the
    front's own children, not the forks that run its sandbox."""
    pids = procs_matching(f"--build-env {cache}/")
    return [p for p in pids if _ppid(p) not in pids]


def set_slow(idx: PackageIndex, project: str, secs: float) -> None:
    if secs > 0:
        idx.slow[project] = secs
    else:
        idx.slow.pop(project, None)


# --------------------------------------------------------------------------
# fixtures

def _add_sdist(idx: PackageIndex) -> None:
    """An sdist-only project: rmtest_sdist-1.0.tar.gz and its index page."""
    idx.add_sdist("rmtest-sdist", "rmtest_sdist-1.0.tar.gz", {
        "rmtest_sdist-1.0/PKG-INFO":
            b"Metadata-Version: 2.1\nName: rmtest-sdist\nVersion: 1.0\n\n",
        "rmtest_sdist-1.0/setup.py":
            b"from setuptools import setup\n"
            b"setup(name='rmtest-sdist', version='1.0', py_modules=['rmtest_sdist'])\n",
        "rmtest_sdist-1.0/rmtest_sdist.py": b"SDIST = True\n",
    })


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    wheels = build_test_packages(tmp_path_factory.mktemp("wheels"))
    with PackageIndex([w for ws in wheels.values() for w in ws]) as index:
        _add_sdist(index)
        yield index


@pytest.fixture(autouse=True)
def _clean_index(idx):
    """Each test starts with an empty request log and no delays."""
    idx.clear_log()
    idx.slow.clear()
    yield
    idx.slow.clear()


@pytest.fixture(scope="module")
def srv(idx):
    """One server for the tests that need no server of their own."""
    server = Server(["--pip-index-url", idx.url])
    yield server
    server.stop()
    server.cleanup()


@pytest.fixture
def own_server(fresh_server, idx):
    """A server of the test's own, using the test index."""
    def start(*extra: str) -> Server:
        return fresh_server(["--pip-index-url", idx.url, *extra])
    return start


# --------------------------------------------------------------------------
# 1. a basic install

def test_install_resolves_dependencies_into_a_sealed_entry(srv, idx):
    async def go(p):
        return (await p.call("rmtest_app", "hello"), await p.path0())

    hello, site = run(with_probe(srv, ["rmtest-app"], go))
    assert hello == "app 2.0"
    entry = entry_of(site)
    assert entry.parent == envs_dir(srv)
    assert HEX64.match(entry.name)
    marker = entry / "complete"
    assert marker.is_file()
    assert re.fullmatch(r"size=\d+\n", marker.read_text())
    assert (Path(site) / "rmtest_app" / "__init__.py").is_file()
    assert (Path(site) / "rmtest_base" / "__init__.py").is_file()

    bad = []
    for root, dirs, files in os.walk(entry):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            st = os.lstat(name)
            if st.st_uid != 0 or st.st_gid != 0:
                bad.append(f"{name}: owner {st.st_uid}:{st.st_gid}")
            if not stat.S_ISLNK(st.st_mode) and \
                    st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
                bad.append(f"{name}: mode {stat.filemode(st.st_mode)}")
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISLNK(st.st_mode):
                bad.append(f"{name}: setuid/setgid {stat.filemode(st.st_mode)}")
    assert not bad, bad[:20]
    # no scratch left behind
    assert not (entry / ".home").exists() and not (entry / ".tmp").exists()
    assert not (entry / "complete.tmp").exists()
    assert idx.count_files("rmtest-app") == 1
    assert idx.count_files("rmtest-base") == 1
    srv.wait_idle()


# --------------------------------------------------------------------------
# 2. version specifiers and extras

@pytest.mark.parametrize("reqs,module,func,expected", [
    (["rmtest-app", "rmtest-base==1.0"], "rmtest_app", "hello", "app 1.0"),
    (["rmtest-base>=2"], "rmtest_base", None, "2.0"),
    (["rmtest-base<2"], "rmtest_base", None, "1.0"),
    (["rmtest-extra[fancy]"], "rmtest_extra", "has_fancy", True),
    (["rmtest-extra"], "rmtest_extra", "has_fancy", False),
], ids=["pin-dependency", "ge", "lt", "extra", "no-extra"])
def test_specifiers_and_extras(srv, reqs, module, func, expected):
    async def go(p):
        if func is None:
            return await p.attr(module, "VERSION")
        return await p.call(module, func)

    assert run(with_probe(srv, reqs, go)) == expected


# --------------------------------------------------------------------------
# 3. isolation

def test_concurrent_sessions_are_isolated(srv):
    async def go():
        c1, p1 = await open_probe(srv, ["rmtest-base==1.0"])
        c2, p2 = await open_probe(srv, ["rmtest-base==2.0"])
        c3, p3 = await open_probe(srv, None)
        try:
            v1, v2 = await asyncio.gather(p1.attr("rmtest_base", "VERSION"),
                                          p2.attr("rmtest_base", "VERSION"))
            s1, s2 = await p1.path0(), await p2.path0()
            with pytest.raises(RemoteExecutionError) as ei:
                await p3.imp("rmtest_base")
            # and again after the others have imported it
            v1b = await p1.attr("rmtest_base", "VERSION")
            return v1, v2, v1b, s1, s2, ei.value
        finally:
            await asyncio.gather(c1.disconnect(), c2.disconnect(), c3.disconnect())

    v1, v2, v1b, s1, s2, exc = run(go())
    assert (v1, v2, v1b) == ("1.0", "2.0", "1.0")
    assert s1 != s2 and entry_of(s1) != entry_of(s2)
    assert isinstance(exc, ModuleNotFoundError)
    assert str(exc) == "No module named 'rmtest_base'"
    assert exc.remote_type == "ModuleNotFoundError"
    srv.wait_idle()


# --------------------------------------------------------------------------
# 4. sharing

def test_equivalent_requirements_share_one_entry(own_server, idx):
    srv = own_server()

    async def go():
        c1, p1 = await open_probe(srv, ["RmTest_App"])
        try:
            c2, p2 = await open_probe(srv, ["rmtest-app"])
            c3, p3 = await open_probe(srv, ["rmtest.app  ", "RMTEST-APP"])
            try:
                return [await p.path0() for p in (p1, p2, p3)], \
                    await p2.call("rmtest_app", "hello")
            finally:
                await c2.disconnect()
                await c3.disconnect()
        finally:
            await c1.disconnect()

    paths, hello = run(go())
    assert paths[0] == paths[1] == paths[2]
    assert hello == "app 2.0"
    assert idx.count_files("rmtest-app") == 1, idx.requested()
    assert idx.count_files("rmtest-base") == 1, idx.requested()
    assert builds(srv) == 1
    assert list(entries(envs_dir(srv)).values()) == [True]


def list_sessions(srv: Server):
    """The Admin service's ListSessions reply (no tokens: every session)."""
    with grpc.insecure_channel(f"{srv.host}:{srv.port}") as ch:
        call = ch.unary_unary(
            "/remotemedia.v1.Admin/ListSessions",
            request_serializer=pb.ListSessionsRequest.SerializeToString,
            response_deserializer=pb.ListSessionsReply.FromString)
        return call(pb.ListSessionsRequest(), timeout=10)


def test_admin_lists_a_sessions_canonical_requirements(srv):
    """ListSessions shows the list the environment was built from: each
    requirement canonical, once, in order."""
    async def go(p):
        await p.path0()
        return await asyncio.to_thread(list_sessions, srv)

    reply = run(with_probe(
        srv, ["RmTest_App", "rmtest-base >= 1", "rmtest.app"], go))
    lists = [list(s.requirements) for s in reply.sessions if s.requirements]
    assert lists == [["rmtest-app", "rmtest-base>=1"]], reply
    srv.wait_idle()


# --------------------------------------------------------------------------
# 5. single flight

def test_single_flight_for_concurrent_sessions(own_server, idx):
    srv = own_server()
    set_slow(idx, "rmtest-slow", 1.0)
    n = 20

    async def go():
        client = RemoteProxyClient(srv.config(pip_packages=["rmtest-slow"], timeout=60.0))
        async with client:
            proxies = await asyncio.gather(*(client.create_proxy(Probe()) for _ in range(n)))
            return await asyncio.gather(*(p.attr("rmtest_slow", "SLOW") for p in proxies)), \
                {await p.path0() for p in proxies}

    t0 = time.monotonic()
    values, paths = run(go(), timeout=110)
    assert values == [True] * n
    assert len(paths) == 1
    assert idx.count_files("rmtest-slow") == 1, idx.requested()
    assert builds(srv) == 1
    assert time.monotonic() - t0 < 60
    srv.wait_idle(20)


def test_a_build_quieter_than_the_clients_timeout_still_completes(own_server, idx):
    """pip says nothing while a slow wheel downloads, and a second session
    waits for the only build slot: the front tells both that the build goes
    on, every 2 s, so a 5 s client timeout bounds the silence, not the
    build (which takes 8 s)."""
    srv = own_server("--env-builds", "1")
    set_slow(idx, "rmtest-slow", 8.0)
    heard = {"slow": [], "queued": []}

    async def go(reqs, who):
        cfg = srv.config(pip_packages=reqs, timeout=5.0, max_retries=0)
        async with RemoteProxyClient(cfg) as client:
            p = await client.create_proxy(Probe(), progress=heard[who].append)
            return await p.path0()

    async def both():
        first = asyncio.ensure_future(go(["rmtest-slow"], "slow"))
        await asyncio.sleep(0.5)  # so that it takes the build slot
        return await asyncio.gather(first, go(["rmtest-app"], "queued"))

    t0 = time.monotonic()
    paths = run(both(), timeout=110)
    assert time.monotonic() - t0 >= 8
    assert all(paths), paths
    slow = [e.log_line for e in heard["slow"] if "pip is still working" in e.log_line]
    queued = [e.log_line for e in heard["queued"]
              if "waiting for a build slot (--env-builds)" in e.log_line]
    assert len(slow) >= 2, [e.log_line for e in heard["slow"]]
    assert len(queued) >= 2, [e.log_line for e in heard["queued"]]
    srv.wait_idle(20)


# --------------------------------------------------------------------------
# 6. install failures

@pytest.mark.parametrize("req,pkg,pip_says", [
    ("rmtest-nope", "rmtest-nope", "No matching distribution found for rmtest-nope"),
    ("rmtest-broken", "rmtest-broken", None),
], ids=["missing", "broken-wheel"])
def test_install_failure_is_clear_and_remembered(srv, idx, req, pkg, pip_says):
    before = builds(srv)
    with pytest.raises(InstallError) as ei:
        run(with_probe(srv, [req], lambda p: p.path0()))
    exc = ei.value
    msg = str(exc)
    assert isinstance(exc, RemoteExecutionError)
    assert exc.code == grpc.StatusCode.FAILED_PRECONDITION
    assert msg.startswith(f"Failed to install {pkg}:"), msg
    assert "pip's output ends with:" in msg, msg
    if pip_says:
        assert pip_says in msg, msg
    else:
        # pip's own words about the bad wheel, not only ours
        tail = msg.split("pip's output ends with:", 1)[1]
        assert "ERROR" in tail and pkg.replace("-", "_") in tail.replace("-", "_"), msg
    assert builds(srv) == before + 1
    requests = len(idx.requested())

    # remembered: the same failure again, without a new build
    t0 = time.monotonic()
    with pytest.raises(InstallError) as ei2:
        run(with_probe(srv, [req.upper()], lambda p: p.path0()))
    assert ei2.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert str(ei2.value).startswith(f"Failed to install {pkg}:"), str(ei2.value)
    assert time.monotonic() - t0 < 5
    assert builds(srv) == before + 1
    assert len(idx.requested()) == requests

    srv.wait_idle()
    # nothing half-installed in the cache
    assert all(entries(envs_dir(srv)).values()), entries(envs_dir(srv))


def test_remembered_failure_keeps_pips_tail(own_server):
    srv = own_server()
    errors = []
    for _ in range(2):
        with pytest.raises(InstallError) as ei:
            run(with_probe(srv, ["rmtest-nope"], lambda p: p.path0()))
        errors.append(str(ei.value))
    assert builds(srv) == 1
    assert "No matching distribution found for rmtest-nope" in errors[1], errors[1]
    assert errors[1] == errors[0]


# --------------------------------------------------------------------------
# 7. hostile requirement strings

HOSTILE = [
    (["--index-url=http://x"], "options are not allowed"),
    (["-r /etc/shadow"], "options are not allowed"),
    (["../x"], "paths are not allowed"),
    (["./pkg"], "paths are not allowed"),
    (["pkg @ file:///etc/passwd"], "direct references"),
    (["https://host/pkg.whl"], "URLs are not allowed"),
    (["pkg\nother"], "control character \\x0a"),
    (["pkg\x00--x"], "control character \\x00"),
    (["a" * 100_000], "too long"),
    (["rmtest-app"] * 10_000, "too many requirements (10000, limit"),
    (["rmtest-app", "pkg;os.system('x')"], "requirement 2 of 2"),
]
HOSTILE_IDS = ["opt-index-url", "opt-r", "dotdot", "dot-slash", "direct-ref", "url",
               "newline", "nul", "100kB", "10000-entries", "bad-marker"]


def _hostile_params():
    for (reqs, why), ident in zip(HOSTILE, HOSTILE_IDS):
        yield pytest.param(reqs, why, id=ident)


@pytest.mark.parametrize("reqs,why", list(_hostile_params()))
def test_hostile_requirements_are_refused_before_any_build(srv, idx, reqs, why):
    before = builds(srv)
    with pytest.raises(RemoteExecutionError) as ei:
        run(with_probe(srv, reqs, lambda p: p.path0()))
    exc = ei.value
    assert not isinstance(exc, InstallError), exc
    assert exc.code == grpc.StatusCode.INVALID_ARGUMENT, (exc.code, str(exc))
    assert why in str(exc), str(exc)
    assert len(str(exc)) < 1024  # the input is quoted cut short
    assert builds(srv) == before
    assert idx.requested() == []
    srv.wait_idle()


# --------------------------------------------------------------------------
# 8. progress

def test_progress_callback_sees_pip_stages(own_server, idx, caplog):
    srv = own_server()
    events = []

    async def progress(ev):  # an async callback works too
        events.append(ev)

    hello = run(with_probe(srv, ["rmtest-app"], lambda p: p.call("rmtest_app", "hello"),
                           progress=progress))
    assert hello == "app 2.0"
    stages = [ev.stage for ev in events]
    for st in (pb.Progress.STAGE_RESOLVING, pb.Progress.STAGE_DOWNLOADING,
               pb.Progress.STAGE_INSTALLING, pb.Progress.STAGE_DONE):
        assert st in stages, (st, stages)
    # pip resolves and downloads by turns, then installs, then is done
    last_download = max(i for i, s in enumerate(stages) if s == pb.Progress.STAGE_DOWNLOADING)
    first_install = stages.index(pb.Progress.STAGE_INSTALLING)
    assert last_download < first_install < stages.index(pb.Progress.STAGE_DONE)
    assert stages[-1] == pb.Progress.STAGE_DONE
    assert pb.Progress.STAGE_UNSPECIFIED not in stages
    assert all(ev.log_line for ev in events)
    lines = "\n".join(ev.log_line for ev in events)
    assert "Collecting rmtest-app" in lines and "Successfully installed" in lines
    # where pip looks is the server's business (an internal index's host)
    assert "Looking in" not in lines and idx.url.split("/simple")[0] not in lines, lines
    resolving = {ev.package for ev in events
                 if ev.stage == pb.Progress.STAGE_RESOLVING and ev.package}
    assert resolving == {"rmtest-app", "rmtest-base"}, resolving
    # "Installing collected packages: rmtest-base, rmtest-app" names the first
    installing = {ev.package for ev in events if ev.stage == pb.Progress.STAGE_INSTALLING}
    assert installing and installing <= {"rmtest-app", "rmtest-base"}, installing
    down = {ev.package for ev in events if ev.stage == pb.Progress.STAGE_DOWNLOADING}
    assert down in ({"rmtest-app", "rmtest-base"}, {"rmtest_app", "rmtest_base"}), down
    assert {ev.package for ev in events if ev.stage == pb.Progress.STAGE_DONE} == {""}

    # without a callback and without a terminal: through logging
    caplog.set_level(logging.INFO, logger="remotemedia")
    assert run(with_probe(srv, ["rmtest-extra[fancy]"],
                          lambda p: p.call("rmtest_extra", "has_fancy"))) is True
    logged = [r.getMessage() for r in caplog.records
              if r.name.startswith("remotemedia") and r.levelno == logging.INFO]
    text = "\n".join(logged)
    assert "Collecting rmtest-extra" in text, text
    assert "Successfully installed" in text, text
    assert "rmtest-fancydep" in text, text


def test_progress_packages_are_project_names(own_server):
    """Downloading lines name the project as pip does elsewhere (rmtest-app,
    not the wheel's distribution spelling rmtest_app)."""
    srv = own_server()
    events = []
    run(with_probe(srv, ["rmtest-app"], lambda p: p.path0(), progress=events.append))
    down = {ev.package for ev in events if ev.stage == pb.Progress.STAGE_DOWNLOADING}
    assert down == {"rmtest-app", "rmtest-base"}, down


# --------------------------------------------------------------------------
# 9. cancellation

def test_abandoned_build_is_cancelled(own_server, idx):
    srv = own_server()
    cache = envs_dir(srv)
    set_slow(idx, "rmtest-slow", 8.0)

    async def go():
        client = RemoteProxyClient(srv.config(pip_packages=["rmtest-slow"]))
        await client.connect()
        task = asyncio.ensure_future(client.create_proxy(Probe()))
        await asyncio.sleep(0.5)
        # wait until pip is really running (the slow wheel is being fetched)
        deadline = time.monotonic() + 10
        while not idx.file_requests("rmtest-slow") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert builder_pids(cache)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.disconnect()
        return t0

    t0 = run(go())
    wait_for(lambda: "cancelling" in srv.log_text(), what="'cancelling' in the log")
    wait_for(lambda: "build cancelled" in srv.log_text(), what="'build cancelled'")
    wait_for(lambda: not builder_pids(cache) and not procs_matching(str(cache) + "/"),
             what="builder processes gone")
    assert time.monotonic() - t0 < 6, "the build ran to its end (the wheel takes 8 s)"
    assert entries(cache) == {}
    srv.wait_idle()

    set_slow(idx, "rmtest-slow", 0)
    assert run(with_probe(srv, ["rmtest-slow"], lambda p: p.attr("rmtest_slow", "SLOW")))
    assert builds(srv) == 2
    assert list(entries(cache).values()) == [True]


def _server_messages(data: bytes) -> list:
    """The gRPC messages of a response body, parsed as ServerMessages."""
    out = []
    while len(data) >= 5:
        n = int.from_bytes(data[1:5], "big")
        if len(data) < 5 + n:
            break
        out.append(pb.ServerMessage.FromString(data[5:5 + n]))
        data = data[5 + n:]
    return out


def test_new_session_during_cancelled_build_gets_a_fresh_build(own_server, idx):
    """The client abandons a build and opens the same environment again in
    one TCP write (RST_STREAM + HEADERS + DATA): the server sees the new
    Open before it reaps the killed builder. The new session must get a
    build of its own, not the dying one's "killed by signal 9" (a bug up to
    commit 50b0202: the cancelled entry stayed in the tree until reaped)."""
    srv = own_server()
    set_slow(idx, "rmtest-slow", 5.0)
    payload = wire.dump_object(Probe())
    open_msg = next(wire.open_messages(payload, pb.FORMAT_PICKLE, ["rmtest-slow"]))
    body = grpc_frame(wire.serialize(open_msg))
    h2c = H2Client(srv.host, srv.port)
    try:
        sid1 = h2c.request(SESSION_METHOD, body, end=False)
        wait_for(lambda: idx.file_requests("rmtest-slow"), what="pip fetching the wheel")
        set_slow(idx, "rmtest-slow", 0)
        conn = h2c.conn
        conn.reset_stream(sid1, error_code=8)  # CANCEL
        sid2 = conn.get_next_available_stream_id()
        conn.send_headers(sid2, [
            (":method", "POST"), (":scheme", "http"),
            (":authority", f"{srv.host}:{srv.port}"), (":path", SESSION_METHOD),
            ("content-type", "application/grpc"), ("te", "trailers")])
        conn.send_data(sid2, body)
        h2c.sock.sendall(conn.data_to_send())
        h2c.responses[sid2] = Response()
        deadline = time.monotonic() + 30
        ready = False
        r = h2c.responses[sid2]
        while time.monotonic() < deadline and not r.ended and not ready:
            r = h2c.wait(sid2, timeout=0.5)
            ready = any(m.WhichOneof("msg") == "ready" for m in _server_messages(r.data))
        assert ready, (r.grpc_status, r.grpc_message)
    finally:
        h2c.close()
    srv.wait_idle()


# --------------------------------------------------------------------------
# 10. a builder killed mid-way

def test_pips_words_name_no_index_host(fresh_server):
    """An index that pip cannot reach: urllib3 names it as
    "HTTPSConnectionPool(host='...', port=...)", which has no URL in it to
    hide. Neither its host and port nor its user reach the client."""
    import socket
    import threading
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(50)
    port = lsn.getsockname()[1]

    def serve():  # plain text on a TLS index's port: an SSL error in pip
        while True:
            try:
                c, _ = lsn.accept()
            except OSError:
                return
            try:
                c.recv(4096)
                c.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello")
                c.close()
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    srv = fresh_server(["--sandbox", "off", "--pip-index-url",
                        f"https://secret-user@127.0.0.1:{port}/simple"])
    lines = []

    async def progress(ev):
        lines.append(ev.log_line)

    try:
        with pytest.raises(InstallError) as ei:
            run(with_probe(srv, ["rmtest-app"], lambda p: p.path0(), progress=progress))
    finally:
        lsn.close()
    seen = "\n".join(lines) + "\n" + str(ei.value)
    assert "ConnectionPool(<index>)" in seen, seen
    assert str(port) not in seen and "secret-user" not in seen, seen


@pytest.mark.parametrize("op", ["==", "==="])
def test_a_requirement_spelled_like_a_file_never_reads_the_servers_directory(
        own_server, idx, request, monkeypatch, op):
    """pip takes "name==1.0.tar.gz" for the file of that name in its
    working directory, if there is one. With the sandbox off, that was the
    daemon's own: an archive there had its setup.py run, although paths
    are refused and --pip-allow-source is off. Such a version is now
    refused (PEP 440), and === (any string) finds no such file: the
    builder works in the new entry, where nobody else puts files."""
    import io
    import tarfile
    # Where the builder's uid may read and write, as a daemon's working
    # directory may be: pytest's own tmp_path is root's alone.
    daemon_cwd = Path(tempfile.mkdtemp(prefix="rm-daemon-cwd-"))
    request.addfinalizer(lambda: shutil.rmtree(daemon_cwd, ignore_errors=True))
    os.chmod(daemon_cwd, 0o777)
    marker = daemon_cwd / "setup-py-ran"
    setup = (f"open({str(marker)!r}, 'w').write('ran')\n"
             "from setuptools import setup\nsetup(name='rmtest-cwd', version='1.0')\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("rmtest-cwd-1.0/setup.py", setup.encode()),
                           ("rmtest-cwd-1.0/PKG-INFO",
                            b"Metadata-Version: 2.1\nName: rmtest-cwd\nVersion: 1.0\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = daemon_cwd / f"rmtest-cwd{op}1.0.tar.gz"
    archive.write_bytes(buf.getvalue())
    os.chmod(archive, 0o644)
    monkeypatch.chdir(daemon_cwd)
    srv = own_server("--sandbox", "off")
    with pytest.raises(RemoteExecutionError) as ei:
        run(with_probe(srv, [f"rmtest-cwd{op}1.0.tar.gz"], lambda p: p.path0()))
    if op == "==":
        assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert 'invalid version "1.0.tar.gz": not a PEP 440 version' in str(ei.value)
    else:
        assert isinstance(ei.value, InstallError)
        assert "does not exist" in str(ei.value), str(ei.value)
    assert not marker.exists()


def test_a_server_killed_mid_build_leaves_no_pip_behind(own_server, idx):
    """SIGKILL of the front: the builder and pip die with it by their death
    signal, but pip's own child (pip again, under the venv's python) did
    not, and went on writing into an entry that the next server would
    build afresh. The builder now takes its whole process group along."""
    srv = own_server("--sandbox", "off")
    cache = envs_dir(srv)
    set_slow(idx, "rmtest-slow", 10.0)

    async def go():
        client = RemoteProxyClient(srv.config(pip_packages=["rmtest-slow"], max_retries=0))
        await client.connect()
        try:
            task = asyncio.ensure_future(client.create_proxy(Probe()))
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not idx.file_requests("rmtest-slow"):
                await asyncio.sleep(0.05)
            assert idx.file_requests("rmtest-slow")
            assert len(procs_matching(str(cache) + "/")) >= 3  # builder, pip, pip's child
            srv.proc.kill()
            with pytest.raises(RemoteExecutionError):
                await task
        finally:
            await client.disconnect()

    run(go())
    wait_for(lambda: not procs_matching(str(cache) + "/"), 5, "the build's processes gone")


def test_a_build_the_server_could_not_run_says_why_and_is_not_remembered(fresh_server, idx):
    """A cache made read-only under the server: the builder fails before
    pip runs. The client used to get "pip failed" with no output, and the
    failure was held against the requirements for 30 s. It now says what
    the builder met, and the next session builds again."""
    cache = tempfile.mkdtemp(prefix="rm-pip-ro-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", cache],
                      capture_output=True).returncode != 0:
        os.rmdir(cache)
        pytest.skip("cannot mount a tmpfs here")
    try:
        srv = fresh_server(["--pip-index-url", idx.url, "--env-cache-dir", cache])
        subprocess.run(["mount", "-o", "remount,ro", cache], check=True)
        with pytest.raises(InstallError) as ei:
            run(with_probe(srv, ["rmtest-base"], lambda p: p.path0()))
        msg = str(ei.value)
        assert "the environment builder failed: " in msg, msg
        assert "Read-only file system" in msg, msg
        subprocess.run(["mount", "-o", "remount,rw", cache], check=True)
        assert run(with_probe(srv, ["rmtest-base"], lambda p: p.attr("rmtest_base", "VERSION"))) \
            == "2.0"
    finally:
        subprocess.run(["umount", "-l", cache], capture_output=True)
        os.rmdir(cache)


def test_killed_builder_fails_clearly_and_is_not_remembered(own_server, idx):
    srv = own_server()
    cache = envs_dir(srv)
    set_slow(idx, "rmtest-slow", 5.0)

    async def go():
        client = RemoteProxyClient(srv.config(pip_packages=["rmtest-slow"]))
        await client.connect()
        try:
            task = asyncio.ensure_future(client.create_proxy(Probe()))
            pids = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pids = builder_pids(cache)
                if pids and idx.file_requests("rmtest-slow"):
                    break
                await asyncio.sleep(0.05)
            assert len(pids) == 1, pids
            # pgrep sees it as well
            out = subprocess.run(["pgrep", "-f", "--", "--build-env"],
                                 capture_output=True, text=True).stdout.split()
            assert str(pids[0]) in out
            os.kill(pids[0], signal.SIGKILL)
            with pytest.raises(InstallError) as ei:
                await task
            return ei.value
        finally:
            await client.disconnect()

    exc = run(go())
    assert "killed by signal 9" in str(exc), str(exc)
    assert "rmtest-slow" in str(exc), str(exc)
    assert exc.code == grpc.StatusCode.FAILED_PRECONDITION
    wait_for(lambda: not procs_matching(str(cache) + "/"), what="pip gone")
    wait_for(lambda: entries(cache) == {}, what="the killed build's tree removed")
    srv.wait_idle()

    set_slow(idx, "rmtest-slow", 0)
    assert run(with_probe(srv, ["rmtest-slow"], lambda p: p.attr("rmtest_slow", "SLOW")))
    assert builds(srv) == 2
    assert list(entries(cache).values()) == [True]


# --------------------------------------------------------------------------
# 11. eviction

def test_eviction_spares_entries_in_use(own_server):
    srv = own_server("--env-cache-size", "1K")
    cache = envs_dir(srv)

    async def go():
        ca, pa = await open_probe(srv, ["rmtest-app"])
        a = entry_of(await pa.path0())
        # over the bound already, but in use: kept and usable
        time.sleep(0.2)
        assert a.is_dir() and (a / "complete").exists()
        assert await pa.call("rmtest_app", "hello") == "app 2.0"
        await ca.disconnect()
        cb, pb_ = await open_probe(srv, ["rmtest-extra"])
        try:
            b = entry_of(await pb_.path0())
            wait_for(lambda: not a.exists(), what="A evicted")
            time.sleep(0.2)
            assert b.is_dir() and (b / "complete").exists()
            assert await pb_.call("rmtest_extra", "has_fancy") is False
            # a second session on B while the first holds it
            cb2, pb2 = await open_probe(srv, ["rmtest-extra"])
            assert entry_of(await pb2.path0()) == b
            await cb2.disconnect()
            time.sleep(0.2)
            assert b.is_dir(), "evicted while a session still uses it"
            assert await pb_.call("rmtest_extra", "has_fancy") is False
        finally:
            await cb.disconnect()
        return a, b

    a, b = run(go())
    wait_for(lambda: not b.exists(), what="B evicted once unused")
    assert entries(cache) == {}
    assert len(re.findall(r"environment [0-9a-f]{12}: evicted", srv.log_text())) == 2
    # an evicted entry is simply built again
    assert run(with_probe(srv, ["rmtest-app"], lambda p: p.call("rmtest_app", "hello"))) \
        == "app 2.0"
    assert builds(srv) == 3


# --------------------------------------------------------------------------
# 12. restart

def test_cache_survives_restart_and_half_built_entries_are_removed(fresh_server, idx):
    state = tempfile.mkdtemp(prefix="rm-pip-state-")
    cache = tempfile.mkdtemp(prefix="rm-pip-envs-")
    os.chmod(cache, 0o755)  # see test_private_env_cache_dir_is_made_traversable
    try:
        args = ["--pip-index-url", idx.url, "--state-dir", state, "--env-cache-dir", cache]
        s1 = fresh_server(args)
        site = run(with_probe(s1, ["rmtest-app"], lambda p: p.path0()))
        assert entry_of(site).parent == Path(cache)
        assert idx.count_files("rmtest-app") == 1
        assert s1.stop() == 0

        half = Path(cache) / ("ab" * 32)
        (half / "venv" / "lib").mkdir(parents=True)
        (half / "venv" / "lib" / "junk.py").write_text("x = 1\n")
        os.chmod(half / "venv" / "lib", 0o555)  # removal copes with read-only dirs
        stray = Path(cache) / "not-a-key"
        stray.mkdir()
        idx.clear_log()

        s2 = fresh_server(args)
        assert not half.exists()
        assert not stray.exists()
        assert "removing incomplete" in s2.log_text()

        async def go(p):
            return await p.path0(), await p.call("rmtest_app", "hello")

        site2, hello = run(with_probe(s2, ["rmtest_app"], go))
        assert (site2, hello) == (site, "app 2.0")
        assert idx.requested() == []
        assert builds(s2) == 0
    finally:
        shutil.rmtree(state, ignore_errors=True)
        subprocess.run(["chmod", "-R", "u+w", cache], capture_output=True)
        shutil.rmtree(cache, ignore_errors=True)


def test_a_restarted_server_evicts_the_least_recently_used_entry(fresh_server, idx):
    """A restarted server used to list its entries in the directory's
    order, as if all had just been used: it could evict the one used
    last. Each use now stamps the entry's directory, and the restart
    orders entries by it."""
    state = tempfile.mkdtemp(prefix="rm-pip-state-")
    try:
        args = ["--pip-index-url", idx.url, "--state-dir", state]
        s1 = fresh_server(args)
        reqs = ["rmtest-base==1.0", "rmtest-base==2.0", "rmtest-fancydep"]
        key = {}
        for r in reqs:
            key[r] = entry_of(run(with_probe(s1, [r], lambda p: p.path0()))).name
        ready = dict(re.findall(r"environment ([0-9a-f]{12}): ready, (\d+) bytes",
                                s1.log_text()))
        sizes = {r: int(ready[key[r][:12]]) for r in reqs}
        # Used again in an order unlike the directory's: the first oldest.
        listed = [n for n in os.listdir(Path(state) / "envs") if not n.startswith(".")]
        order = sorted(reqs, key=lambda r: listed.index(key[r]))
        order = order[1:] + order[:1]
        for r in order:
            time.sleep(0.05)
            run(with_probe(s1, [r], lambda p: p.path0()))
        assert s1.stop() == 0
        # Room for the two used last: the restart evicts the first.
        room = sizes[order[1]] + sizes[order[2]]
        s2 = fresh_server(args + ["--env-cache-size", str(room)])
        evicted = re.findall(r"environment ([0-9a-f]{12}): evicted", s2.log_text())
        assert evicted == [key[order[0]][:12]], (evicted, {r: key[r][:12] for r in order})
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_an_entry_damaged_on_disk_is_built_again(own_server, idx):
    """The entry of a ready environment is removed behind the server's
    back: the next session builds it again rather than fail on a missing
    directory; while a session still uses a damaged entry, a new one is
    refused with a clear reason, and the entry is rebuilt once it ends."""
    from remotemedia.core.exceptions import InstallError, RemoteMediaError
    srv = own_server("--session-pool", "0")

    def damage(site):
        entry = entry_of(site)
        subprocess.run(["chmod", "-R", "u+w", str(entry)], check=True)
        shutil.rmtree(entry)

    async def hello(p):
        return await p.path0(), await p.call("rmtest_app", "hello")

    site, _ = run(with_probe(srv, ["rmtest-app"], hello))
    damage(site)
    site2, greeting = run(with_probe(srv, ["rmtest-app"], hello))
    assert greeting == "app 2.0" and site2 == site
    assert builds(srv) == 2, srv.log_text()[-2000:]
    assert "its completion marker is gone or unreadable" in srv.log_text()

    # The marker kept, the venv or its site-packages removed: built again too.
    for part, said, n in (("site-packages", "its site-packages is gone", 3),
                          ("venv", "its venv is gone", 4)):
        entry = entry_of(site)
        subprocess.run(["chmod", "-R", "u+w", str(entry)], check=True)
        shutil.rmtree(site if part == "site-packages" else entry / "venv")
        assert (entry / "complete").exists()
        site2, greeting = run(with_probe(srv, ["rmtest-app"], hello))
        assert greeting == "app 2.0" and site2 == site
        assert builds(srv) == n, srv.log_text()[-2000:]
        assert said in srv.log_text()

    async def in_use():
        client, held = await open_probe(srv, ["rmtest-app"])
        try:
            damage(await held.path0())
            with pytest.raises(InstallError) as e:
                await with_probe(srv, ["rmtest-app"], hello)
            assert "damaged on disk while sessions use it" in str(e.value)
        finally:
            await client.disconnect()
    run(in_use())
    srv.wait_idle(20)
    assert run(with_probe(srv, ["rmtest-app"], hello))[1] == "app 2.0"
    assert builds(srv) == 5


def test_eviction_works_for_a_server_not_run_as_root(idx, unprivileged):
    """Development mode (--sandbox off, not root): sealed entries are
    read-only, so evicting one needs its owner's write bits back, or the
    entry stayed on disk, marked complete, and its next build failed on
    'File exists'. Three builds in a cache of 1 KiB: each evicts the one
    before, and the third rebuilds the first."""
    from remotemedia.core.node import RemoteExecutorConfig
    port = unprivileged.start(["--sandbox", "off", "--pip-index-url", idx.url,
                               "--env-cache-size", "1K", "--session-pool", "0"])

    async def version(req):
        cfg = RemoteExecutorConfig(host="127.0.0.1", port=port, timeout=60.0,
                                   max_retries=0, pip_packages=[req])
        async with RemoteProxyClient(cfg) as client:
            p = await client.create_proxy(Probe())
            return await p.attr("rmtest_base", "VERSION")

    for req in ("rmtest-base==1.0", "rmtest-base==2.0", "rmtest-base==1.0"):
        assert run(version(req)) == req.split("==")[1], unprivileged.log_text()[-3000:]
    text = unprivileged.log_text()
    assert text.count("evicted") >= 2, text[-3000:]
    assert "cannot remove" not in text and "rm: " not in text, text[-3000:]
    trash = Path(unprivileged.state) / "envs" / ".trash"
    wait_for(lambda: not any(trash.iterdir()), 10, "the trash to be emptied")


def test_private_env_cache_dir_is_made_traversable(fresh_server, idx):
    cache = tempfile.mkdtemp(prefix="rm-pip-envs-")  # 0700, root's
    try:
        srv = fresh_server(["--pip-index-url", idx.url, "--env-cache-dir", cache])
        assert run(with_probe(srv, ["rmtest-base"], lambda p: p.attr("rmtest_base", "VERSION"))) \
            == "2.0"
    finally:
        subprocess.run(["chmod", "-R", "u+w", cache], capture_output=True)
        shutil.rmtree(cache, ignore_errors=True)


# --------------------------------------------------------------------------
# 13. the host's site-packages

HOST_MODULE = "numpy" if importlib.util.find_spec("numpy") else "yaml"


def test_system_site_packages_on_by_default(srv):
    assert importlib.util.find_spec(HOST_MODULE) is not None
    assert run(with_probe(srv, ["rmtest-base"], lambda p: p.can_import(HOST_MODULE))) is True


def test_system_site_packages_off_hides_host_packages(own_server):
    srv = own_server("--pip-system-site-packages", "off")

    async def go(p):
        return (await p.attr("rmtest_base", "VERSION"), await p.can_import(HOST_MODULE),
                await p.adder(2))

    version, visible, add = run(with_probe(srv, ["rmtest-base"], go))
    assert version == "2.0"
    assert visible is False
    # The worker's own cloudpickle is the host's, taken before they hid.
    assert add(1) == 3


def test_pth_files_of_the_environment_run_as_in_a_venv(srv, idx, tmp_path, caplog):
    """A package's .pth files work in the session as in a venv: the
    directories they name join sys.path ahead of the host's packages and
    their import lines run; one that raises is reported, and the session
    goes on."""
    idx.add_wheel(build_wheel(tmp_path, "rmtest-pth", "1.0", {
        "rmtest_pth.pth": "# a comment\n\nrmtest_pth_dir\nimport rmtest_pth_hook\n",
        "rmtest_pth_dir/rmtest_pth_inner.py": "INNER = 'inner'\n",
        "rmtest_pth_hook.py": "import os\nos.environ['RMTEST_PTH_HOOK'] = 'ran'\n",
        "zz_rmtest_pth.pth": "import rmtest_pth_raises\n",
        "rmtest_pth_raises.py": "raise RuntimeError('pth boom')\n",
    }))

    async def go(p):
        return (await p.attr("rmtest_pth_inner", "INNER"),
                await p.getenv("RMTEST_PTH_HOOK"), await p.sys_path())

    with caplog.at_level(logging.INFO):
        inner, hook, path = run(with_probe(srv, ["rmtest-pth"], go))
    assert inner == "inner" and hook == "ran"
    extra = [i for i, p in enumerate(path) if p.endswith("/site-packages/rmtest_pth_dir")]
    host = [i for i, p in enumerate(path) if p.endswith("dist-packages")]
    assert len(extra) == 1 and host and extra[0] < host[0], path
    assert "zz_rmtest_pth.pth" in caplog.text and "pth boom" in caplog.text


def test_host_packages_hidden_however_the_cache_dir_is_spelt(own_server, tmp_path):
    """An environment built without the host's packages keeps its own
    site-packages on sys.path when the cache directory is given with a
    trailing slash (the worker's sys.path entry then holds a '//')."""
    srv = own_server("--pip-system-site-packages", "off",
                     "--env-cache-dir", str(tmp_path / "envs") + "/")

    async def go(p):
        return await p.attr("rmtest_base", "VERSION"), await p.can_import(HOST_MODULE)

    assert run(with_probe(srv, ["rmtest-base"], go)) == ("2.0", False)


# --------------------------------------------------------------------------
# 14. pip's configuration is the server's alone

def test_host_pip_environment_is_ignored(fresh_server, idx, monkeypatch, tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = http://127.0.0.1:9/conf\nno-index = true\n")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/nowhere")
    monkeypatch.setenv("PIP_FIND_LINKS", "/nonexistent")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_ONLY_BINARY", ":none:")
    srv = fresh_server(["--pip-index-url", idx.url])  # inherits os.environ
    monkeypatch.undo()
    cache = envs_dir(srv)
    set_slow(idx, "rmtest-app", 2.0)  # time to look at pip while it runs

    def pip_process():
        for pid in procs_matching(f"{cache}/"):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            if argv[:3] == [b"/usr/bin/python3", b"-m", b"pip"]:
                return ([a.decode() for a in argv],
                        dict(e.decode().split("=", 1) for e in environ if b"=" in e),
                        status)
        return None

    async def go():
        seen = None
        async with RemoteProxyClient(srv.config(pip_packages=["rmtest-app"])) as client:
            task = asyncio.ensure_future(client.create_proxy(Probe()))
            deadline = time.monotonic() + 20
            while seen is None and not task.done() and time.monotonic() < deadline:
                seen = pip_process()
                await asyncio.sleep(0.05)
            proxy = await task
            return seen, await proxy.call("rmtest_app", "hello")

    seen, hello = run(go())
    assert hello == "app 2.0"
    assert idx.count_files("rmtest-app") == 1
    assert seen is not None, "pip was never seen running"
    argv, environ, status = seen
    assert "--isolated" in argv and "--only-binary=:all:" in argv, argv
    assert argv[argv.index("--index-url") + 1] == idx.url, argv
    assert not [a for a in argv if a.startswith(("--extra-index-url", "--find-links",
                                                 "--no-binary", "--pre", "-r", "-c"))], argv
    assert argv[-2:] == ["--", "rmtest-app"], argv
    assert environ.get("PIP_CONFIG_FILE") == "/dev/null", environ
    assert not {k for k in environ if k.startswith("PIP_")} - {"PIP_CONFIG_FILE"}, environ
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M).groups()
    assert set(uids) == {"60999"}, uids  # the builder uid, not root
    assert re.search(r"^NoNewPrivs:\s+1", status, re.M), status


def test_source_distributions_are_refused_by_default(srv, idx):
    with pytest.raises(InstallError) as ei:
        run(with_probe(srv, ["rmtest-sdist"], lambda p: p.path0()))
    msg = str(ei.value)
    assert msg.startswith("Failed to install rmtest-sdist:"), msg
    assert "No matching distribution found for rmtest-sdist" in msg, msg
    assert any(r.startswith("/simple/rmtest-sdist") for r in idx.requested()), idx.requested()
    assert idx.count_files("rmtest-sdist") == 0  # never even downloaded
    srv.wait_idle()
