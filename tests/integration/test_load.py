"""Lifecycle under load (issue 6): many concurrent sessions with zero
errors and the front's memory back to its baseline; churn with nothing left
behind; a SIGKILLed front takes its workers along and the next start
cleans up."""
from __future__ import annotations

import asyncio
import glob
import os
import re
import signal
import time

import pytest

from clientlib import runner
from serverlib import wait_for
from remotemedia.remote import RemoteProxyClient
from targets import Counter

run = runner(300.0)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def session_cgroups() -> list[str]:
    return [p for p in glob.glob("/sys/fs/cgroup/*/remotemedia/*") if os.path.isdir(p)]


def cgroups_of(ids) -> list[str]:
    """Session cgroups are named "<daemon tag>-<session id>"."""
    ids = set(ids)
    return [p for p in session_cgroups() if os.path.basename(p).rsplit("-", 1)[-1] in ids]


def test_200_concurrent_sessions_zero_errors_memory_back_to_baseline(fresh_server):
    srv = fresh_server(["--session-network", "off", "--session-memory", "256M"])
    nsessions, seconds = 200, 8.0

    async def one(client, i, errors, calls):
        try:
            p = await client.create_proxy(Counter())
            end = time.monotonic() + seconds
            n = 0
            while time.monotonic() < end:
                n += 1
                assert await p.inc() == n
            calls.append(n)
            await client.close_proxy(p)
        except Exception as exc:  # counted, then asserted to be none
            errors.append(repr(exc))

    async def main():
        errors, calls = [], []
        async with RemoteProxyClient(srv.config(timeout=120)) as warm:
            p = await warm.create_proxy(Counter())
            await p.inc()
            await warm.close_proxy(p)
        srv.wait_idle()
        base = rss_kib(srv.proc.pid)
        clients = [RemoteProxyClient(srv.config(timeout=120)) for _ in range(8)]
        for c in clients:
            await c.connect()
        await asyncio.gather(*(one(clients[i % 8], i, errors, calls) for i in range(nsessions)))
        peak = rss_kib(srv.proc.pid)
        for c in clients:
            await c.disconnect()
        return errors, calls, base, peak

    errors, calls, base, peak = run(main())
    assert errors == []
    assert len(calls) == nsessions
    srv.wait_idle(timeout=60)
    after = rss_kib(srv.proc.pid)
    print(f"load: {nsessions} sessions, {sum(calls)} calls in {seconds}s; "
          f"front RSS base {base} KiB, peak {peak} KiB, after {after} KiB")
    assert after - base < 8 * 1024, (base, peak, after)


# 1000 sandboxed sessions take about 115 s on this 2-core VM: more than the
# default per-test bound, on a slower day.
@pytest.mark.timeout(500)
def test_churn_1000_sessions_leaves_nothing(fresh_server):
    srv = fresh_server(["--session-network", "off"])

    async def worker(client, n):
        for _ in range(n):
            p = await client.create_proxy(Counter())
            assert await p.inc() == 1
            await client.close_proxy(p)

    async def main():
        clients = [RemoteProxyClient(srv.config(timeout=60)) for _ in range(8)]
        for c in clients:
            await c.connect()
        await asyncio.gather(*(worker(c, 125) for c in clients))
        for c in clients:
            await c.disconnect()

    run(main(), timeout=600)
    srv.wait_idle(timeout=60)
    assert srv.worker_pids() == [] and srv.session_dirs() == []
    ids = set(re.findall(r"session ([0-9a-f]{32}) freed", srv.log_text()))
    assert len(ids) == 1000
    # no session cgroup of this server remains: each is named after its session
    assert cgroups_of(ids) == []


def test_sigkill_of_the_front_kills_workers_and_next_start_cleans_up(fresh_server):
    srv = fresh_server()

    async def main():
        client = RemoteProxyClient(srv.config(timeout=30, max_retries=0))
        await client.connect()
        ps = [await client.create_proxy(Counter()) for _ in range(3)]
        for p in ps:
            await p.inc()
        workers = srv.worker_pids()
        srv.proc.kill()
        srv.proc.wait()
        try:
            await client.disconnect()
        except Exception:
            pass
        return workers

    workers = run(main())
    assert len(workers) == 3
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if os.path.exists(f"/proc/{p}")
                 and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
        time.sleep(0.05)
    assert alive == []
    leftovers = srv.session_dirs()
    assert len(leftovers) == 3  # what the SIGKILL left
    assert cgroups_of(leftovers)
    again = fresh_server(["--state-dir", srv.state_dir])
    left = os.listdir(os.path.join(srv.state_dir, "sessions"))
    assert [d for d in left if d not in again.spare_ids()] == []  # its spares aside
    assert cgroups_of(leftovers) == []


HOLDER = r"""
import asyncio, sys
sys.path[:0] = sys.argv[3:]
from remotemedia.core.node import RemoteExecutorConfig
from remotemedia.remote import RemoteProxyClient
from targets import Counter

async def main():
    c = RemoteProxyClient(RemoteExecutorConfig(host="127.0.0.1", port=int(sys.argv[1]),
                                               timeout=120))
    await c.connect()
    ps = await asyncio.gather(*(c.create_proxy(Counter()) for _ in range(int(sys.argv[2]))))
    await asyncio.gather(*(p.inc() for p in ps))
    print("ready", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="about the sandbox's cgroups")
def test_sessions_ending_at_once_leave_no_cgroup_and_do_not_stall_the_front(fresh_server):
    """A client holding 40 sessions is killed: all end at once. Their
    cgroups went one by one, each waiting for its processes with sleeps
    that the burst of SIGCHLDs cut short: one or two of 40 were left until
    the next start, and the front's loop stalled for hundreds of ms. The
    cgroups still busy now go from a timer, and the front answers an Echo
    meanwhile."""
    import subprocess
    import sys
    from pathlib import Path

    from h2raw import echo_ok

    srv = fresh_server(["--session-network", "off", "--session-pool", "0"])
    lib = Path(__file__).resolve().parents[1] / "lib"
    py = Path(__file__).resolve().parents[2] / "python"
    ids: set[str] = set()
    for _ in range(2):
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(srv.port), "40",
                                   str(py), str(lib)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "ready"
        finally:
            holder.kill()
            holder.wait()
        t = time.monotonic()
        echo_ok(srv.host, srv.port)  # the loop answers while the 40 end
        stall = time.monotonic() - t
        srv.wait_idle(timeout=30)
        ids |= set(re.findall(r"session ([0-9a-f]{32}) freed", srv.log_text()))
        assert len(ids) % 40 == 0
        wait_for(lambda: cgroups_of(ids) == [], timeout=10, what="their cgroups removed")
        # Shown, not judged: make test times nothing.
        print(f"40 sessions ended at once: an Echo took {stall * 1000:.0f} ms meanwhile")
