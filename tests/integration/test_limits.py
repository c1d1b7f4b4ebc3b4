"""Session limits and the sandbox's identity, through the real server and
the real client: --session-max-lifetime, --session-idle-timeout, the need
for root (and --sandbox off), one uid per session from --session-uids,
--session-cpu's thread variables, --session-memory, and bad flag values.

Most tests need root (the sandbox is on); they are skipped otherwise.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -q \
    tests/integration/test_limits.py
"""
from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time

import grpc
import pytest

from clientlib import run
from remotemedia.core.exceptions import RemoteExecutionError
from remotemedia.remote import RemoteProxyClient
from serverlib import BUILD, NOBODY

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")
DEFAULT_UIDS = range(61000, 62000)


class Probe:
    """Runs inside a session and reports what it sees."""

    def ping(self):
        return "pong"

    def echo(self, x):
        return x

    def identity(self):
        status = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                status[key] = value.strip()
        return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
                "groups": os.getgroups(), "status": status}

    def nofile(self):
        import resource as r
        return r.getrlimit(r.RLIMIT_NOFILE)

    def env(self, names):
        return {n: os.environ.get(n) for n in names}

    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds

    def hog(self, mib):
        # b"x" * n fills (touches) every page, unlike a lazily zeroed buffer.
        self.block = b"\x01" * (mib << 20)
        return len(self.block)


def status_code(exc: BaseException):
    return getattr(exc, "code", None)


async def wait_closed(proxy, timeout: float) -> float:
    """Wait until the server ends proxy's session; return the time waited."""
    session = proxy._rm_session
    start = time.monotonic()
    while not session.closed:
        if time.monotonic() - start > timeout:
            raise AssertionError(f"session still open after {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def open_before(client, flag: str, attempts: int = 4):
    """create_proxy(Probe()) on a server with a short session limit.

    On a loaded machine the worker may take longer to start than the limit
    (the lifetime, and the idle clock too: see
    test_idle_clock_does_not_run_while_the_session_installs), which ends the
    session before Ready. Retry that case: the tests that use this are about
    the limit once the session runs.
    """
    for attempt in range(attempts):
        try:
            return await client.create_proxy(Probe())
        except RemoteExecutionError as exc:
            if (attempt + 1 == attempts or status_code(exc) != grpc.StatusCode.RESOURCE_EXHAUSTED
                    or flag not in str(exc)):
                raise


# ---------------------------------------------------------------------------
# 0. Ready.limits: what the session is told


def ready_limits(srv):
    """Open a session on a raw stream; its Ready's limits."""
    from h2raw import H2Client, open_session, split_grpc
    from remotemedia._proto import remotemedia_pb2 as pb
    c = H2Client(srv.host, srv.port, timeout=60)
    try:
        sid = open_session(c, Probe(), timeout=60)
        ready = pb.ServerMessage.FromString(split_grpc(c.responses[sid].data)[-1]).ready
        return ready.limits
    finally:
        c.close()


@pytest.mark.parametrize("sandbox", ["off", "on"])
def test_ready_states_the_limits_in_force(fresh_server, sandbox):
    """Every field of Ready.limits is the flag's value, and 0 only where
    nothing limits: the sandbox's own limits without a sandbox."""
    if sandbox == "on" and os.geteuid() != 0:
        pytest.skip("the sandbox needs root")
    flags = ["--sandbox", sandbox, "--max-inflight-calls", "7", "--session-idle-timeout", "5m",
             "--max-streams", "40",
             "--session-max-lifetime", "1h", "--max-value-size", "3M",
             "--session-memory", "300M", "--session-pids", "99", "--session-cpu", "150"]
    srv = fresh_server(flags + ["--max-message-size", "64K"])
    lim = ready_limits(srv)
    on = sandbox == "on"
    # Chunks leave room for their envelope in a message of 64K.
    assert (lim.max_message_bytes, lim.max_value_bytes, lim.max_chunk_bytes) == \
        (64 << 10, 3 << 20, 32 << 10)
    assert (lim.max_inflight_calls, lim.idle_timeout_ms, lim.max_lifetime_ms) == \
        (7, 300_000, 3_600_000)
    assert (lim.memory_bytes, lim.pids, lim.cpu_percent) == \
        ((300 << 20, 99, 150) if on else (0, 0, 0))
    assert lim.prefetch_items == 0
    assert lim.max_streams == 40

    async def big_argument():
        async with RemoteProxyClient(srv.config(timeout=60.0)) as client:
            p = await client.create_proxy(Probe())
            data = os.urandom(200_000)
            return await p.echo(data) == data
    assert run(big_argument())  # sent in chunks that fit
    # A --max-message-size over what a Session message may be: that bound.
    lim = ready_limits(fresh_server(flags + ["--max-message-size", "16M"]))
    assert lim.max_message_bytes == (1 << 20) + (32 << 10)


# ---------------------------------------------------------------------------
# 1. --session-max-lifetime


class Waits:
    async def wait(self, i, s):
        await asyncio.sleep(s)
        return i

    def size(self, data):
        return len(data)

    def gen(self, n):
        yield from range(n)


def test_calls_beyond_max_inflight_wait_for_a_slot_not_end_the_session(fresh_server):
    """The client keeps within Ready.limits.max_inflight_calls: a gather of
    more calls than that waits, in order, instead of ending the session
    with RESOURCE_EXHAUSTED. Cancelled calls hold their slot until the
    server answers them, as the server counts them."""
    srv = fresh_server(["--sandbox", "off", "--max-inflight-calls", "8"])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=30)) as client:
            p = await client.create_proxy(Waits())
            got = await asyncio.gather(*(p.wait(i, 0.02) for i in range(100)))
            assert got == list(range(100))
            # Cancel calls that hold every slot, then call again at once.
            held = [asyncio.ensure_future(p.wait(i, 0.3)) for i in range(8)]
            await asyncio.sleep(0.1)
            for t in held:
                t.cancel()
            more = await asyncio.gather(*(p.wait(i, 0) for i in range(20)),
                                        *(p.gen(3) for _ in range(4)))
            assert more[:20] == list(range(20))
            for g in more[20:]:
                assert [x async for x in g] == [0, 1, 2]
            assert await p.wait(7, 0) == 7
    run(main())
    assert "calls in flight" not in srv.log_text()


def test_a_session_keeps_the_bounds_its_ready_stated(fresh_server, tmp_path):
    """A SIGHUP that lowers --max-inflight-calls, --max-value-size or
    --max-message-size (so max_chunk_bytes) applies to new sessions: one
    open already keeps the bounds its Ready gave its client, which the
    client keeps within."""
    conf = tmp_path / "rm.conf"
    conf.write_text("max-inflight-calls = 8\nmax-value-size = 8M\nmax-message-size = 4M\n")
    srv = fresh_server(["--sandbox", "off", "--config", str(conf)])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=30)) as client:
            p = await client.create_proxy(Waits())
            conf.write_text("max-inflight-calls = 2\nmax-value-size = 1M\n"
                            "max-message-size = 512K\n")
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while "--max-inflight-calls 2 (was 8)" not in srv.log_text():
                assert time.monotonic() < deadline, srv.log_text()[-2000:]
                await asyncio.sleep(0.05)
            got = await asyncio.gather(*(p.wait(i, 0.05) for i in range(24)))
            assert got == list(range(24))
            big = b"x" * (2 << 20)
            assert await p.size(big) == len(big)
            q = await client.create_proxy(Waits())  # a new one: the new bounds
            lim = q._rm_session.ready.limits
            assert (lim.max_inflight_calls, lim.max_value_bytes) == (2, 1 << 20)
            assert lim.max_chunk_bytes == (512 - 32) << 10
            assert await q.size(b"y" * (900 << 10)) == 900 << 10  # in two chunks
            assert await asyncio.gather(*(q.wait(i, 0.01) for i in range(6))) == list(range(6))
            with pytest.raises(ValueError, match="limit"):
                await q.size(big)
            assert await p.size(b"x") == 1
    run(main())
    assert "calls in flight" not in srv.log_text()
    assert "larger than" not in srv.log_text()
    assert "a chunk may hold" not in srv.log_text()


class Blob:
    def __init__(self):
        self.blob = b"x" * (3 << 20)

    def size(self):
        return len(self.blob)


def test_a_large_object_opens_under_a_message_size_just_over_its_chunks(fresh_server):
    """The object goes before Ready, in chunks of 1 MiB: under a
    --max-message-size of 1040K each message fits, though a call's chunks
    get less (max_chunk_bytes leaves 32 KiB for the envelope). The front's
    check of chunk sizes refused the object there."""
    srv = fresh_server(["--sandbox", "off", "--max-message-size", "1040K"])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=30)) as client:
            p = await client.create_proxy(Blob())
            assert await p.size() == 3 << 20
    run(main())


@ROOT_ONLY
def test_max_lifetime_ends_the_session_and_the_server_keeps_serving(fresh_server):
    srv = fresh_server(["--session-max-lifetime", "2s"])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=20.0)) as client:
            # The lifetime counts from the stream's start: measure from there.
            p = None
            t0 = time.monotonic()
            with pytest.raises(RemoteExecutionError) as ei:
                p = await client.create_proxy(Probe())
                assert await p.ping() == "pong"
                await p.sleep(15)  # outlives the session
            elapsed = time.monotonic() - t0
            exc = ei.value
            assert status_code(exc) == grpc.StatusCode.RESOURCE_EXHAUSTED, repr(exc)
            assert "lifetime" in str(exc), str(exc)
            assert "--session-max-lifetime" in str(exc), str(exc)
            assert "2 s" in str(exc), str(exc)
            assert 1.8 <= elapsed <= 6.0, elapsed
            if p is not None:
                # Later calls on the ended session fail the same way.
                with pytest.raises(RemoteExecutionError) as ei2:
                    await p.ping()
                assert status_code(ei2.value) == grpc.StatusCode.RESOURCE_EXHAUSTED

            # The server keeps serving: a new session works.
            q = await open_before(client, "--session-max-lifetime")
            assert await q.ping() == "pong"
            await client.close_proxy(q)
    run(main())
    srv.wait_idle()
    assert srv.proc.poll() is None
    assert "session lifetime 2 s reached (--session-max-lifetime)" in srv.log_text()


# ---------------------------------------------------------------------------
# 2. --session-idle-timeout


@ROOT_ONLY
def test_idle_timeout_ends_an_idle_session_but_not_a_busy_one(fresh_server):
    srv = fresh_server(["--session-idle-timeout", "1s"])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=20.0)) as client:
            idle = await open_before(client, "--session-idle-timeout")
            busy = await open_before(client, "--session-idle-timeout")
            t0 = time.monotonic()
            calls = 0
            # busy calls every 0.3 s for 3 s: each message restarts its clock.
            while time.monotonic() - t0 < 3.0:
                assert await busy.ping() == "pong"
                calls += 1
                await asyncio.sleep(0.3)
            assert calls >= 8
            assert not busy._rm_session.closed
            assert await busy.ping() == "pong"

            # idle sent nothing since Ready: it was ended long ago.
            assert idle._rm_session.closed
            with pytest.raises(RemoteExecutionError) as ei:
                await idle.ping()
            exc = ei.value
            assert status_code(exc) == grpc.StatusCode.RESOURCE_EXHAUSTED, repr(exc)
            assert "idle" in str(exc), str(exc)
            assert "--session-idle-timeout" in str(exc), str(exc)
            await client.close_proxy(busy)
    run(main())
    srv.wait_idle()
    assert srv.proc.poll() is None


@ROOT_ONLY
def test_idle_timeout_fires_within_a_bounded_time(fresh_server):
    srv = fresh_server(["--session-idle-timeout", "1s"])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=20.0)) as client:
            p = await open_before(client, "--session-idle-timeout")
            assert await p.ping() == "pong"
            waited = await wait_closed(p, timeout=5.0)
            assert 0.7 <= waited <= 3.0, waited
            with pytest.raises(RemoteExecutionError) as ei:
                await p.ping()
            assert status_code(ei.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "session idle time 1 s reached (--session-idle-timeout)" in str(ei.value)
    run(main())
    srv.wait_idle()


@ROOT_ONLY
def test_limit_message_states_a_sub_second_duration_exactly(fresh_server):
    srv = fresh_server(["--session-idle-timeout", "1500ms"])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=20.0)) as client:
            p = await open_before(client, "--session-idle-timeout")
            await wait_closed(p, timeout=6.0)
            with pytest.raises(RemoteExecutionError) as ei:
                await p.ping()
            return str(ei.value)
    msg = run(main())
    srv.wait_idle()
    assert "--session-idle-timeout" in msg
    assert "1500 ms" in msg or "1.5 s" in msg, msg


@ROOT_ONLY
def test_idle_clock_does_not_run_while_the_session_installs(fresh_server):
    from pkgindex import PackageIndex, build_test_packages
    wheels_dir = tempfile.mkdtemp(prefix="rm-wheels-")
    try:
        wheels = build_test_packages(wheels_dir)
        with PackageIndex([w for ws in wheels.values() for w in ws],
                          slow={"rmtest-slow": 3.0}) as idx:
            srv = fresh_server(["--pip-index-url", idx.url,
                                "--session-idle-timeout", "1500ms"])
            progress = []

            async def main():
                cfg = srv.config(timeout=30.0, pip_packages=["rmtest-slow"], max_retries=0)
                async with RemoteProxyClient(cfg) as client:
                    try:
                        p = await client.create_proxy(Probe(), progress=progress.append)
                    except RemoteExecutionError as exc:
                        return exc
                    return await p.ping()
            t0 = time.monotonic()
            got = run(main())
            elapsed = time.monotonic() - t0
            srv.wait_idle(20)
    finally:
        shutil.rmtree(wheels_dir, ignore_errors=True)
    assert got == "pong", f"{got!r} after {elapsed:.1f} s, {len(progress)} Progress"


# ---------------------------------------------------------------------------
# 3. the sandbox needs root; --sandbox off warns


def test_the_sandbox_refuses_to_start_without_root(unprivileged):
    t0 = time.monotonic()
    r = subprocess.run(unprivileged.argv([]), capture_output=True, text=True, timeout=15)
    elapsed = time.monotonic() - t0
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert elapsed < 5.0, elapsed
    assert "root" in out, out
    assert "--sandbox off" in out, out
    assert "listening on" not in out, out
    # --check-config says so too, rather than "configuration OK".
    r = subprocess.run(unprivileged.argv(["--check-config", "--config", "/dev/null"]),
                       capture_output=True, text=True, timeout=15)
    assert r.returncode == 2 and "the sandbox needs root" in r.stderr, r.stdout + r.stderr
    assert "configuration OK" not in r.stdout


def test_sandbox_off_starts_unprivileged_and_warns_loudly(unprivileged):
    port = unprivileged.start(["--sandbox", "off"])
    start_log = unprivileged.log_text()
    assert "SANDBOX OFF" in start_log, start_log
    # The warning comes at start, before the server is listening.
    assert start_log.index("SANDBOX OFF") < start_log.index("listening on")

    from remotemedia.core.node import RemoteExecutorConfig
    cfg = RemoteExecutorConfig(host="127.0.0.1", port=port, timeout=20.0)

    async def main():
        async with RemoteProxyClient(cfg) as client:
            p = await client.create_proxy(Probe())
            ident = await p.identity()
            return p._rm_session.session_id, ident
    sid, ident = run(main())
    assert ident["uid"] == NOBODY  # unconfined: the server's own uid
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = unprivileged.log_text()
        if re.search(rf"SANDBOX OFF: session {sid}\b", log):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"no per-session warning for {sid}: {log}")
    assert unprivileged.stop() == 0, unprivileged.log_text()


# ---------------------------------------------------------------------------
# 4. identity: one uid per session, no privileges


def _check_unprivileged(ident: dict) -> None:
    st = ident["status"]
    assert ident["euid"] == ident["uid"]
    assert ident["gid"] == ident["uid"], ident
    assert ident["groups"] == [], ident
    assert st["Groups"] == "", st["Groups"]
    assert int(st["CapEff"], 16) == 0, st["CapEff"]
    assert int(st["CapPrm"], 16) == 0, st["CapPrm"]
    assert st["NoNewPrivs"] == "1", st["NoNewPrivs"]
    assert set(st["Uid"].split()) == {str(ident["uid"])}, st["Uid"]
    assert set(st["Gid"].split()) == {str(ident["gid"])}, st["Gid"]


@ROOT_ONLY
def _soft_nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no Max open files line")


@ROOT_ONLY
def test_the_front_raises_its_open_files_limit_but_sessions_keep_theirs(fresh_server):
    # systemd and shells start services with a soft limit of 1024: one
    # descriptor per session would cap the daemon below --max-sessions.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        srv = fresh_server(["--session-pool", "0"])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert _soft_nofile(srv.proc.pid) == hard

    async def main():
        async with RemoteProxyClient(srv.config()) as client:
            return await (await client.create_proxy(Probe())).nofile()
    assert tuple(run(main())) == (1024, 1024)


def test_concurrent_sessions_run_under_different_default_uids(server):
    async def main():
        async with RemoteProxyClient(server.config()) as client:
            a = await client.create_proxy(Probe())
            b = await client.create_proxy(Probe())
            return await asyncio.gather(a.identity(), b.identity())
    ia, ib = run(main())
    assert ia["uid"] != ib["uid"]
    for ident in (ia, ib):
        assert ident["uid"] in DEFAULT_UIDS, ident["uid"]
        _check_unprivileged(ident)
    server.wait_idle()


@ROOT_ONLY
def test_custom_uid_range_is_used_exhausted_and_reused(fresh_server):
    srv = fresh_server(["--session-uids", "62000-62001"])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=20.0, max_retries=0)) as client:
            a = await client.create_proxy(Probe())
            b = await client.create_proxy(Probe())
            ia, ib = await asyncio.gather(a.identity(), b.identity())
            assert {ia["uid"], ib["uid"]} == {62000, 62001}
            _check_unprivileged(ia)
            _check_unprivileged(ib)

            # A third concurrent session finds no free uid.
            with pytest.raises(RemoteExecutionError) as ei:
                await client.create_proxy(Probe())
            assert status_code(ei.value) in (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                             grpc.StatusCode.UNAVAILABLE), repr(ei.value)
            # The two sessions are untouched by the refusal.
            assert await a.ping() == "pong"
            assert await b.ping() == "pong"

            # Once a session closes, its uid is given out again.
            freed = ia["uid"]
            await client.close_proxy(a)
            c = await client.create_proxy(Probe())
            ic = await c.identity()
            assert ic["uid"] == freed, (ic["uid"], freed)
            _check_unprivileged(ic)
    run(main())
    srv.wait_idle()
    assert srv.proc.poll() is None
    assert "no free session uid in 62000-62001 (--session-uids)" in srv.log_text()


@ROOT_ONLY
def test_uid_exhaustion_tells_the_client_which_limit(fresh_server):
    srv = fresh_server(["--session-uids", "62000-62000"])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=20.0, max_retries=0)) as client:
            a = await client.create_proxy(Probe())
            assert await a.ping() == "pong"
            with pytest.raises(RemoteExecutionError) as ei:
                await client.create_proxy(Probe())
            return ei.value
    exc = run(main())
    srv.wait_idle()
    assert "--session-uids" in str(exc), str(exc)
    assert "62000-62000" in str(exc), str(exc)
    assert status_code(exc) == grpc.StatusCode.RESOURCE_EXHAUSTED, repr(exc)
    assert not isinstance(exc, ConnectionError), repr(exc)


# ---------------------------------------------------------------------------
# 5. --session-cpu and the thread variables

THREAD_VARS = ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"]


@ROOT_ONLY
def test_session_cpu_sets_the_thread_variables(fresh_server, server):
    two = fresh_server(["--session-cpu", "200"])

    async def probe(srv):
        async with RemoteProxyClient(srv.config()) as client:
            p = await client.create_proxy(Probe())
            return await p.env(THREAD_VARS)
    assert run(probe(two)) == {v: "2" for v in THREAD_VARS}
    assert run(probe(server)) == {v: "1" for v in THREAD_VARS}  # default 100
    two.wait_idle()
    server.wait_idle()


def _cgroup_lines(pid: int) -> dict[str, str]:
    """/proc/PID/cgroup: each v1 hierarchy's controllers, and its path."""
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctls, path = line.rstrip("\n").split(":", 2)
            out[ctls] = path
    return out


@ROOT_ONLY
def test_session_cpu_0_is_no_cpu_limit(fresh_server):
    """--session-cpu 0: no CPU limit. Ready says so (0), rmctl info too,
    the thread variables count the CPUs the worker may use (at most 64),
    and where the cpu controller is v1 the session's processes stay out of
    it, while the memory and pids controllers keep them."""
    srv = fresh_server(["--session-cpu", "0"])
    assert ready_limits(srv).cpu_percent == 0

    async def probe():
        async with RemoteProxyClient(srv.config()) as client:
            p = await client.create_proxy(Probe())
            env = await p.env(THREAD_VARS + ["REMOTEMEDIA_SESSION"])
            pid = srv.worker_pid_of(env.pop("REMOTEMEDIA_SESSION"))
            return env, _cgroup_lines(pid)
    env, lines = run(probe())
    usable = min(len(os.sched_getaffinity(srv.proc.pid)), 64)
    assert env == {v: str(usable) for v in THREAD_VARS}
    cpu = [path for ctls, path in lines.items() if "cpu" in ctls.split(",")]
    memory = [path for ctls, path in lines.items() if "memory" in ctls.split(",")]
    if cpu and memory:  # v1: a hierarchy each
        assert "/remotemedia/" in memory[0], lines
        assert "/remotemedia/" not in cpu[0], lines
    clean = {k: v for k, v in os.environ.items() if k != "REMOTEMEDIA_TOKEN"}
    info = subprocess.run([str(BUILD / "rmctl"), "--port", str(srv.port), "info"],
                          capture_output=True, text=True, timeout=30, env=clean)
    assert info.returncode == 0, info.stderr
    assert re.search(r"cgroup v[12]: .*, cpu no limit", info.stdout), info.stdout
    srv.wait_idle()


# ---------------------------------------------------------------------------
# 6. --session-memory


@ROOT_ONLY
def test_memory_limit_ends_the_session_and_spares_its_neighbour(fresh_server):
    srv = fresh_server(["--session-memory", "64M"])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=30.0)) as client:
            neighbour = await client.create_proxy(Probe())
            hog = await client.create_proxy(Probe())
            assert await neighbour.ping() == "pong"
            assert await hog.ping() == "pong"
            with pytest.raises(RemoteExecutionError) as ei:
                await hog.hog(200)
            exc = ei.value
            assert status_code(exc) == grpc.StatusCode.RESOURCE_EXHAUSTED, repr(exc)
            assert str(exc) == "memory limit 64 MiB reached (--session-memory)", str(exc)
            # The neighbour keeps answering, and can use memory of its own.
            assert await neighbour.ping() == "pong"
            assert await neighbour.hog(16) == 16 << 20
            assert await neighbour.ping() == "pong"
    run(main())
    srv.wait_idle()
    assert srv.proc.poll() is None


# ---------------------------------------------------------------------------
# 7. bad flag values


def _run_daemon(args: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess:
    state = tempfile.mkdtemp(prefix="rm-flags-")
    try:
        return subprocess.run(
            [str(BUILD / "remotemediad"), "--listen", "127.0.0.1:0",
             "--state-dir", state] + args,
            capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.parametrize("flag,value", [
    ("--session-uids", "5-3"),
    ("--session-network", "bogus"),
    ("--session-memory", "10"),
    ("--sandbox", "maybe"),
    ("--session-cpu", "-1"),
    # a few more of the same family
    ("--session-uids", "0-5"),
    ("--session-uids", "61000"),
    ("--session-cpu", "6401"),
    ("--session-pids", "3"),
    ("--session-disk", "1K"),
    ("--session-max-lifetime", "5"),
    ("--session-idle-timeout", "soon"),
])
@pytest.mark.parametrize("form", ["separate", "equals"])
def test_bad_flag_values_exit_2_naming_the_flag(flag, value, form):
    args = [flag, value] if form == "separate" else [f"{flag}={value}"]
    r = _run_daemon(args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    first = r.stderr.splitlines()[0] if r.stderr else ""
    assert first.startswith(f"remotemediad: {flag}:"), r.stderr
    assert f"'{value}'" in first, first
    assert "listening on" not in r.stderr


@ROOT_ONLY
def test_builder_uid_inside_the_session_uids_is_refused():
    state = tempfile.mkdtemp(prefix="rm-flags-")
    proc = subprocess.Popen(
        [str(BUILD / "remotemediad"), "--listen", "127.0.0.1:0", "--state-dir", state,
         "--session-uids", "62000-62001", "--builder-uid", "62001"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        try:
            out, _ = proc.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=10)
            raise AssertionError(f"started with overlapping uids: {out}")
        assert proc.returncode == 2, out
        assert "--builder-uid" in out and "--session-uids" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(state, ignore_errors=True)
