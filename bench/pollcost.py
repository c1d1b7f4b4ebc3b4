#!/usr/bin/python3
"""What a worker's poll (--session-busy-poll) costs and gains: for each
bound given, a Python client calls a Counter in a loop, waiting GAP
microseconds after each answer, and this prints the worker's CPU time
per call (its processes' /proc/PID/schedstat), the loop's cycle and the
call's p50.

  bench/pollcost.py [--calls N] [--gaps US ...] BOUND_US [BOUND_US ...]

Sandbox off, one session per bound, the front not polling (--busy-poll
0), so that the figures are the worker's. The client busy-waits its gap,
as a client busy with its own work would.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench import descendants  # noqa: E402  (also puts python/, tests/lib on the path)
from remotemedia.remote import RemoteProxyClient  # noqa: E402
from serverlib import Server  # noqa: E402
from targets import Counter  # noqa: E402


def cpu_ns(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # gone
    return total


async def loop(srv, calls: int, gap_us: int) -> tuple[float, float, float]:
    """(worker CPU us a call, cycle us, call p50 us)."""
    async with RemoteProxyClient(srv.config(timeout=30.0)) as client:
        counter = await client.create_proxy(Counter())
        for _ in range(50):
            await counter.inc()
        pids = descendants(srv.proc.pid)
        before, start = cpu_ns(pids), time.perf_counter()
        lat = []
        for _ in range(calls):
            t = time.perf_counter()
            await counter.inc()
            lat.append(time.perf_counter() - t)
            until = time.perf_counter() + gap_us / 1e6
            while time.perf_counter() < until:
                pass
        cycle = (time.perf_counter() - start) / calls * 1e6
        used = (cpu_ns(pids) - before) / calls / 1e3
    lat.sort()
    return used, cycle, lat[len(lat) // 2] * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bounds", nargs="+", help="--session-busy-poll values, us")
    ap.add_argument("--calls", type=int, default=800)
    ap.add_argument("--gaps", type=int, nargs="+", default=[0, 150, 300, 450])
    args = ap.parse_args()
    for bound in args.bounds:
        srv = Server(["--sandbox", "off", "--session-pool", "0", "--busy-poll", "0",
                      "--session-busy-poll", bound])
        try:
            for gap in args.gaps:
                used, cycle, p50 = asyncio.run(loop(srv, args.calls, gap))
                print(f"poll {bound:>5} us, gap {gap:>4} us: worker CPU {used:6.1f} us a call, "
                      f"cycle {cycle:6.1f} us, call p50 {p50:6.1f} us", flush=True)
        finally:
            srv.stop()
            srv.cleanup()


if __name__ == "__main__":
    main()
