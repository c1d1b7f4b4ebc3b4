"""Spare sessions (--session-pool): workers started, confined and warmed up
before a client asks (src/front_pool.c).

A session with no packages takes a spare's worker; the pool refills in the
background; a spare that dies is replaced, with a growing delay if spares
keep dying, while sessions start workers of their own; every spare is its
own exec, so no two sessions share a hash secret or random state; nothing
of a spare is left behind.
"""
from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from clientlib import runner
from remotemedia.remote import RemoteProxyClient
from pkgindex import PackageIndex, build_test_packages, build_wheel
import serverlib
from serverlib import BUILD, FAKE_WORKER, SERVER_ARGS

SANDBOX_OFF = "off" in [b for a, b in zip(SERVER_ARGS, SERVER_ARGS[1:]) if a == "--sandbox"]
ID = r"[0-9a-f]{32}"


class Fingerprint:
    """What must differ between any two sessions."""

    def take(self):
        import os
        import random
        return {"str_hash": hash("remotemedia"), "bytes_hash": hash(b"remotemedia"),
                "urandom": os.urandom(16).hex(), "random": random.random(),
                "session": os.path.basename(os.getcwd())}

    def ping(self):
        return "pong"

    def app(self):
        import rmtest_app
        return rmtest_app.hello()

    def getenv(self, name):
        import os
        return os.environ.get(name)


run = runner(120.0)


def wait_for(predicate, timeout=30.0, what="condition"):
    return serverlib.wait_for(predicate, timeout, what)


def spares_started(srv) -> list[tuple[str, int]]:
    """(id, worker pid) of every spare started so far, in order."""
    return [(i, int(p)) for i, p in
            re.findall(rf"pool_start: spare ({ID}): worker (\d+)", srv.log_text())]


def live_spares(srv) -> list[tuple[str, int]]:
    """Spares started, not taken, whose worker still runs."""
    ids = srv.spare_ids()
    return [(i, p) for i, p in spares_started(srv)
            if i in ids and os.path.exists(f"/proc/{p}")
            and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]


def session_processes(sid: str) -> list[int]:
    """The worker processes of a session or spare (remotemedia-worker, by
    the REMOTEMEDIA_SESSION its front gave it)."""
    want, out = f"REMOTEMEDIA_SESSION={sid}".encode(), []
    for entry in os.listdir("/proc"):
        try:
            if (entry.isdigit() and open(f"/proc/{entry}/comm").read().startswith(
                    "remotemedia-wor") and want in open(f"/proc/{entry}/environ",
                                                         "rb").read().split(b"\0")):
                out.append(int(entry))
        except OSError:
            continue
    return out


def adopted(srv) -> set[str]:
    return set(re.findall(rf"front_pool_adopt: session ({ID})", srv.log_text()))


def cgroups_named(ids) -> list[str]:
    return [p for p in glob.glob("/sys/fs/cgroup/*/remotemedia/*")
            if os.path.basename(p).rsplit("-", 1)[-1] in ids]


async def fingerprints(srv, n):
    async with RemoteProxyClient(srv.config(timeout=60.0)) as client:
        proxies = [await client.create_proxy(Fingerprint()) for _ in range(n)]
        return [await p.take() for p in proxies]


def test_sessions_take_spares_and_share_no_random_state(fresh_server):
    srv = fresh_server(["--session-pool", "2"])
    wait_for(lambda: len(live_spares(srv)) == 2, what="two spares")
    a, b = run(fingerprints(srv, 2))
    assert {a["session"], b["session"]} <= adopted(srv)
    for key in ("str_hash", "bytes_hash", "urandom", "random"):
        assert a[key] != b[key], key
    # The pool refills in the background.
    wait_for(lambda: len(live_spares(srv)) == 2, what="the pool refilled")
    srv.wait_idle()


def test_no_pool_starts_no_spare(fresh_server):
    """With --session-pool 0 every session execs its own worker, and two
    such sessions share no random state either."""
    srv = fresh_server(["--session-pool", "0"])
    a, b = run(fingerprints(srv, 2))
    assert "pool_start" not in srv.log_text()
    assert adopted(srv) == set()
    for key in ("str_hash", "bytes_hash", "urandom", "random"):
        assert a[key] != b[key], key


def test_killed_spare_is_replaced_and_cleaned_up(fresh_server):
    srv = fresh_server(["--session-pool", "1"])
    (sid, pid), = wait_for(lambda: live_spares(srv), what="a spare")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: f"spare worker {pid} ended unused" in srv.log_text(),
             what="the death logged")
    wait_for(lambda: sid not in srv.session_dirs(spares=True), what="its dir removed")
    wait_for(lambda: cgroups_named({sid}) == [], what="its cgroup removed")
    new = wait_for(lambda: [s for s in live_spares(srv) if s[0] != sid], what="a new spare")
    (fp,) = run(fingerprints(srv, 1))
    assert fp["session"] == new[0][0]
    srv.wait_idle()


def test_dying_spares_back_off_while_sessions_start_their_own(fresh_server, tmp_path):
    """Spares whose worker keeps failing are restarted with a growing delay,
    and sessions meanwhile exec a worker of their own."""
    count = tmp_path / "starts"
    count.write_text("")
    wrapper = tmp_path / "worker"
    # The first four workers fail at once; the rest are real.
    wrapper.write_text(f"""#!/bin/sh
n=$(wc -c < {count})
if [ "$n" -lt 4 ]; then printf x >> {count}; exit 3; fi
exec {BUILD / "remotemedia-worker"} "$@"
""")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    srv = fresh_server(["--session-pool", "2", "--worker", str(wrapper)])
    wait_for(lambda: srv.log_text().count("ended unused") >= 4, what="four deaths")
    time.sleep(0.5)
    # Backed off: 4 deaths, then at most a try or two more.
    assert srv.log_text().count("ended unused: worker exited with status 3") == 4
    (fp,) = run(fingerprints(srv, 1))
    assert srv.proc.poll() is None
    # The pool recovers: a later session takes a spare.
    wait_for(lambda: live_spares(srv), timeout=60, what="the pool back")
    (fp2,) = run(fingerprints(srv, 1))
    assert fp2["session"] in adopted(srv)
    srv.wait_idle()


@pytest.mark.skipif(SANDBOX_OFF, reason="about the sandbox's uids")
def test_spares_leave_uids_for_sessions_with_packages(fresh_server):
    """With as few uids as spares, no spare starts: a session that must
    start its own worker always finds a uid."""
    srv = fresh_server(["--session-pool", "2", "--session-uids", "62000-62001"])
    time.sleep(0.5)
    assert "pool_start" not in srv.log_text()
    a, b = run(fingerprints(srv, 2))
    assert a["str_hash"] != b["str_hash"]


def test_sigterm_removes_spares(fresh_server):
    srv = fresh_server(["--session-pool", "3"])
    wait_for(lambda: len(live_spares(srv)) == 3, what="three spares")
    ids = {i for i, _ in spares_started(srv)}
    pids = [p for _, p in spares_started(srv)]
    assert srv.stop() == 0
    assert os.listdir(srv.sessions_dir()) == []
    assert cgroups_named(ids) == []
    for p in pids:
        assert not os.path.exists(f"/proc/{p}") or \
            open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    assert "stopped" in srv.log_text()


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    wheels = build_test_packages(tmp_path_factory.mktemp("wheels"))
    with PackageIndex([w for ws in wheels.values() for w in ws]) as index:
        yield index


def env_spares(srv) -> list[str]:
    return re.findall(rf"pool_start: spare ({ID}): worker \d+ \(environment\)",
                      srv.log_text())


async def app_session(srv, reqs):
    async with RemoteProxyClient(srv.config(timeout=120.0, pip_packages=reqs)) as client:
        p = await client.create_proxy(Fingerprint())
        fp = await p.take()
        fp["app"] = await p.app()
        return fp


def test_a_used_environment_gets_a_spare(fresh_server, idx):
    """The second session with the same packages takes a spare made for
    them: the environment is attached, and the session shares no state."""
    srv = fresh_server(["--pip-index-url", idx.url, "--session-pool", "1"])
    first = run(app_session(srv, ["rmtest-app"]))
    assert first["session"] not in adopted(srv)
    wait_for(lambda: env_spares(srv), what="a spare of the environment")
    second = run(app_session(srv, ["rmtest-app"]))
    assert second["session"] in adopted(srv)
    assert second["session"] in env_spares(srv)
    assert first["app"] == second["app"] == "app 2.0"
    assert first["str_hash"] != second["str_hash"]
    # A session with no packages never takes an environment's spare.
    (plain,) = run(fingerprints(srv, 1))
    assert plain["session"] not in env_spares(srv)
    # Taken, the environment's spare is replaced.
    wait_for(lambda: len(env_spares(srv)) == 2, what="the environment's spare replaced")
    srv.wait_idle()


def test_an_environment_whose_pth_prints_keeps_its_spares(fresh_server, idx, tmp_path, caplog):
    """The .pth files of an environment run at the Open, also in its spare:
    what they print reaches the session that takes the spare, rather than
    ending the spare as a failed one (a spare says nothing before its Open)."""
    idx.add_wheel(build_wheel(tmp_path, "rmtest-pthtalk", "1.0", {
        "rmtest_pthtalk.pth": "import rmtest_pthtalk_hook\n",
        "rmtest_pthtalk_hook.py":
            "import os, sys\n"
            "print('pth hook says hello', file=sys.stderr)\n"
            "os.environ['RMTEST_PTHTALK'] = 'ran'\n",
    }))
    srv = fresh_server(["--pip-index-url", idx.url, "--session-pool", "1"])

    async def session():
        cfg = srv.config(timeout=120.0, pip_packages=["rmtest-pthtalk"])
        async with RemoteProxyClient(cfg) as client:
            p = await client.create_proxy(Fingerprint())
            return (await p.take())["session"], await p.getenv("RMTEST_PTHTALK")

    with caplog.at_level(logging.INFO):
        first, ran = run(session())
        assert ran == "ran"
        (spare,) = wait_for(lambda: env_spares(srv), what="a spare of the environment")
        time.sleep(1.0)  # it would speak, if it spoke before its Open
        assert "before its Open" not in srv.log_text()
        second, ran = run(session())
    assert second == spare and second in adopted(srv) and ran == "ran"
    assert caplog.text.count("pth hook says hello") == 2
    srv.wait_idle()


def test_environment_spares_are_bounded(fresh_server, idx):
    """At most --session-pool environment spares: the oldest gives way."""
    srv = fresh_server(["--pip-index-url", idx.url, "--session-pool", "1"])
    run(app_session(srv, ["rmtest-app"]))
    (a,) = wait_for(lambda: env_spares(srv), what="a spare of the first environment")
    run(app_session(srv, ["rmtest-app", "rmtest-base==2.0"]))
    wait_for(lambda: len(env_spares(srv)) == 2, what="a spare of the second")
    wait_for(lambda: a not in srv.session_dirs(spares=True), what="the first one gone")
    wait_for(lambda: cgroups_named({a}) == [], what="its cgroup removed")
    assert "ended unused" not in srv.log_text()  # making room is no failure
    srv.wait_idle()


def test_spare_whose_sandbox_fails_is_discarded_and_logged(fresh_server, tmp_path):
    """A spare that reports a failed set-up before any Open (a Fatal) is
    killed, its reason logged, and restarted only after a growing delay."""
    os.chmod(FAKE_WORKER, 0o755)
    link = tmp_path / "fake_worker_fatal_at_init"
    link.symlink_to(FAKE_WORKER)
    srv = fresh_server(["--session-pool", "1", "--worker", str(link), "--sandbox", "off"])
    wait_for(lambda: srv.log_text().count("ended unused") >= 3, what="three spares gone")
    log = srv.log_text()
    assert "failed: sandbox: bind /usr: test failure" in log
    time.sleep(0.5)
    # 100, 200, 400 ms apart, then 800: a handful, not a spin.
    assert srv.log_text().count("ended unused") <= 5
    assert srv.proc.poll() is None
    wait_for(lambda: srv.session_dirs(spares=True) == [] or len(live_spares(srv)) <= 1,
             what="nothing piled up")


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (state is [0]); [] once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return []


def nice_of(pid: int) -> int:
    return int(stat_fields(pid)[16])


class Niceness:
    def of_me(self):
        import os
        return os.getpriority(os.PRIO_PROCESS, 0)


def test_spares_start_behind_sessions_and_sessions_get_it_back(fresh_server):
    """A spare's start-up is work ahead of need: its processes run at nice
    10, behind the sessions running now. The one that becomes a session
    gets nice 0 back, in every process of its group."""
    srv = fresh_server(["--session-pool", "1"])
    wait_for(lambda: len(live_spares(srv)) == 1, what="a spare")
    (sid, pid), = live_spares(srv)
    assert nice_of(pid) == 10

    async def main():
        async with RemoteProxyClient(srv.config(timeout=60.0)) as client:
            n = await client.create_proxy(Niceness())
            assert await n.of_me() == 0
            assert sid in adopted(srv)
            group = [int(p) for p in os.listdir("/proc") if p.isdigit()
                     and stat_fields(int(p))[2:3] == [str(pid)]]
            assert pid in group and len(group) >= 1
            assert all(nice_of(p) == 0 for p in group), group
    run(main())


@pytest.mark.parametrize("how", ["a spare taken", "a SIGHUP"])
def test_the_backoff_ends_when_spares_may_live_again(fresh_server, tmp_path, how):
    """Spares that keep dying are restarted later and later; once a session
    takes a spare that lived, or a SIGHUP says the cause may be mended, the
    pool refills at once, not when the backoff would have ended (the refill
    asked for was dropped behind that timer: 30 s at most)."""
    die = tmp_path / "die"
    wrapper = tmp_path / "worker"
    wrapper.write_text(f"""#!/bin/sh
if [ -e {die} ]; then exit 3; fi
exec {BUILD / "remotemedia-worker"} "$@"
""")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    srv = fresh_server(["--session-pool", "2", "--worker", str(wrapper)])
    wait_for(lambda: len(live_spares(srv)) == 2, what="two spares")
    die.touch()
    (_, pid), _ = live_spares(srv)
    os.kill(pid, signal.SIGKILL)
    # 100, 200, ... 3200 ms apart: the next try is 6.4 s off.
    wait_for(lambda: srv.log_text().count("ended unused") >= 7, what="seven deaths")
    die.unlink()
    if how == "a SIGHUP":
        srv.proc.send_signal(signal.SIGHUP)  # nothing changed
    else:
        (fp,) = run(fingerprints(srv, 1))
        assert fp["session"] in adopted(srv)
    wait_for(lambda: len(live_spares(srv)) == 2, timeout=5, what="the pool refilled")
    srv.wait_idle()


def test_a_session_dir_goes_even_with_no_inode_for_the_trash(fresh_server, tmp_path):
    """With no inode left where the state directory is, the trash directory
    cannot be made: a session's directory is removed where it is. It used
    to stay until the next start, holding the inodes that had run out."""
    state = tmp_path / "state"
    state.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,nr_inodes=200,mode=0700",
                       "tmpfs", str(state)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    srv = None
    try:
        srv = fresh_server(["--session-pool", "1", "--state-dir", str(state)])
        (sid, _), = wait_for(lambda: live_spares(srv), what="a spare")
        assert not (state / "trash").exists()  # emptied and removed at start
        n = 0
        with pytest.raises(OSError):
            while n < 1000:
                (state / f"fill{n}").touch()
                n += 1
        (fp,) = run(fingerprints(srv, 1))
        assert fp["session"] == sid
        wait_for(lambda: sid not in os.listdir(state / "sessions"), what="its directory removed")
        assert "mkdir" in srv.log_text() and "cannot remove" not in srv.log_text()
    finally:
        if srv is not None:
            srv.stop()
        subprocess.run(["umount", "-l", str(state)])


@pytest.mark.skipif(SANDBOX_OFF, reason="about the sandbox's memory limit")
def test_a_spare_killed_by_its_memory_limit_says_so(fresh_server):
    """As a session's death does: not only 'killed by signal 9'."""
    srv = fresh_server(["--session-pool", "1", "--session-memory", "3M"])
    wait_for(lambda: "ended unused: memory limit 3 MiB reached (--session-memory)"
             in srv.log_text(), what="the limit named")


def test_a_sighup_that_changes_session_limits_replaces_environment_spares(fresh_server, idx,
                                                                         tmp_path):
    """Spares are made under the session limits: a SIGHUP that changes them
    ends every spare, and the spare of an environment is made anew as well
    (only those without packages were), so that the next session with
    those packages still takes one."""
    conf = tmp_path / "rm.conf"
    conf.write_text("session-memory = 1G\n")
    srv = fresh_server(["--config", str(conf), "--pip-index-url", idx.url,
                        "--session-pool", "1"])
    run(app_session(srv, ["rmtest-app"]))
    (old,) = wait_for(lambda: env_spares(srv), what="a spare of the environment")
    conf.write_text("session-memory = 768M\n")
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "session limits changed" in srv.log_text(), what="the reload")
    new = wait_for(lambda: [s for s in env_spares(srv) if s != old], what="a new one")
    fp = run(app_session(srv, ["rmtest-app"]))
    assert fp["session"] in adopted(srv) and fp["session"] in new
    srv.wait_idle()


def test_a_spare_that_hung_ends_its_session_at_the_open_timeout(fresh_server):
    """A spare whose Python hangs (stopped here) is given to a session like
    any other: the front cannot tell. Its Ready never comes, and the
    session waited as long as its client would: forever, for one that set
    no deadline. --open-timeout bounds it; the next session is served."""
    from remotemedia.core.exceptions import RemoteTimeoutError

    srv = fresh_server(["--session-pool", "1", "--open-timeout", "2s"])
    (sid, _), = wait_for(lambda: live_spares(srv), what="a spare")
    # Every process of the spare, even one it forks as it is stopped: a
    # spare just started may not have made its Python process yet.
    stopped: set[int] = set()
    for _ in range(10):
        for pid in set(session_processes(sid)) - stopped:
            os.kill(pid, signal.SIGSTOP)
            stopped.add(pid)
        time.sleep(0.05)
    assert stopped
    with pytest.raises(RemoteTimeoutError) as e:  # the client's own: 60 s
        run(fingerprints(srv, 1))
    assert "did not answer the Open within 2000 ms (--open-timeout)" in str(e.value)
    (fp,) = run(fingerprints(srv, 1))
    assert fp["session"] != sid
    srv.wait_idle()


def test_a_spare_that_died_as_it_was_taken_is_opened_again(fresh_server):
    """A spare whose Python died just before a session took it: its death
    reaches the front through W1 and W0, a few ms later, once the session
    has it (here W0 and W1 are stopped meanwhile, to hold that window
    open). No code of the session ran, as the worker had not said it took
    the Open: the session ends UNAVAILABLE, not WorkerDiedError, and the
    Python client's retry gets another worker."""
    srv = fresh_server(["--session-pool", "1"])
    if SANDBOX_OFF:
        pytest.skip("a worker of one process (--sandbox off): nothing holds the death back")
    (sid, _), = wait_for(lambda: live_spares(srv), what="a spare")
    # W0, W1 and the Python process (W2), once the spare waits for its Open.
    wait_for(lambda: len(session_processes(sid)) == 3, what="the spare's three processes")
    python = srv.worker_pid_of(sid)
    held = [p for p in session_processes(sid) if p != python]
    for pid in held:
        os.kill(pid, signal.SIGSTOP)
    os.kill(python, signal.SIGKILL)

    async def main():
        opening = asyncio.ensure_future(fingerprints(srv, 1))
        deadline = time.monotonic() + 30
        while sid not in adopted(srv):
            assert time.monotonic() < deadline and not opening.done(), srv.log_text()[-3000:]
            await asyncio.sleep(0.02)
        for pid in held:
            os.kill(pid, signal.SIGCONT)
        return await opening

    (fp,) = run(main())
    assert fp["session"] != sid
    log = srv.log_text()
    assert "the spare worker given to the session failed before it took the Open" in log
    assert "WorkerDied" not in log
    srv.wait_idle()
