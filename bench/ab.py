#!/usr/bin/python3
"""A/B two trees on this VM, whose speed swings between runs: alternate
them, round after round, against the same kind of server, and compare
the medians of their rounds.

  bench/ab.py calls A B   the Python client's call: A and B are client
                          package trees (their python/ directories), each
                          run in a child process, pinging a server of this
                          tree's build; per round the call's p50 and the
                          main thread's CPU time per call
  bench/ab.py opens A B   open to first result: A and B are build
                          directories (a worktree's build/), each serving
                          its own rounds; per round rmctl bench's open p50
                          and the Python client's (this tree's)
  bench/ab.py serves A B  the call figures of two builds (build
                          directories, as for opens), both serving at once:
                          per round the Python client's call p50 (this
                          tree's client), its grpc.aio Echo p50 and their
                          ratio, rmctl bench's call and Echo p50, and its
                          calls/s over 8 sessions

For an older commit: `git worktree add /tmp/old COMMIT && make -C /tmp/old
all`, then /tmp/old/python or /tmp/old/build. Sandbox off, as the open
target's figure; --rounds (default 6), --n calls a round (default 2000),
--pin (calls only) puts the server on CPU 0 and the client on CPU 1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "tests" / "lib"))
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402
import serverlib  # noqa: E402
from serverlib import Server  # noqa: E402

# Run in a child with the client tree under test first on its path.
PING = r'''
import asyncio, json, os, sys, time
if sys.argv[5] == "pin":
    os.sched_setaffinity(0, {1})
sys.path.insert(0, sys.argv[1])
from remotemedia import RemoteExecutorConfig, RemoteProxyClient

class Trivial:
    def ping(self, x):
        return x

async def main():
    cfg = RemoteExecutorConfig(host=sys.argv[2], port=int(sys.argv[3]), timeout=60.0)
    async with RemoteProxyClient(cfg) as client:
        proxy = await client.create_proxy(Trivial())
        for i in range(300):
            await proxy.ping(i)
        out, cpu = [], time.thread_time()
        for i in range(int(sys.argv[4])):
            t = time.perf_counter()
            await proxy.ping(i)
            out.append(time.perf_counter() - t)
        cpu = time.thread_time() - cpu
    out.sort()
    print(json.dumps({"p50_us": out[len(out) // 2] * 1e6, "cpu_us": cpu / len(out) * 1e6}))

asyncio.run(main())
'''


def rounds_of(trees: list[str], n: int):
    """The trees in order, reversed every other round."""
    for r in range(n):
        yield from (trees if r % 2 == 0 else trees[::-1])


def calls(args) -> dict[str, list[dict]]:
    if args.pin:
        os.sched_setaffinity(0, {0})  # the server, started below, inherits it
    srv = Server(["--sandbox", "off"])
    res: dict[str, list[dict]] = {t: [] for t in args.trees}
    try:
        for tree in rounds_of(args.trees, args.rounds):
            out = subprocess.run(
                ["/usr/bin/python3", "-c", PING, tree, srv.host, str(srv.port),
                 str(args.n), "pin" if args.pin else "-"],
                capture_output=True, text=True, check=True, timeout=600)
            res[tree].append(json.loads(out.stdout))
    finally:
        srv.stop()
        srv.cleanup()
    return res


def opens(args) -> dict[str, list[dict]]:
    res: dict[str, list[dict]] = {t: [] for t in args.trees}
    for tree in rounds_of(args.trees, args.rounds):
        serverlib.BUILD = Path(tree).resolve()
        srv = Server(["--sandbox", "off"])
        try:
            rmctl = bench.rmctl_open_ms(srv, 24)
            py = asyncio.run(bench.open_times(srv.config(timeout=60.0), 24))
        finally:
            srv.stop()
            srv.cleanup()
        res[tree].append({"rmctl_ms": rmctl, "python_ms": bench.ms(py)})
    return res


def serves(args) -> dict[str, list[dict]]:
    servers = {}
    try:
        for tree in args.trees:
            serverlib.BUILD = Path(tree).resolve()
            servers[tree] = Server(["--sandbox", "off"])
        res: dict[str, list[dict]] = {t: [] for t in args.trees}
        for tree in rounds_of(args.trees, args.rounds):
            srv = servers[tree]
            out = subprocess.run(
                ["/usr/bin/python3", "-c", PING, str(ROOT / "python"), srv.host,
                 str(srv.port), str(args.n), "-"],
                capture_output=True, text=True, check=True, timeout=600)
            call = json.loads(out.stdout)["p50_us"]
            echo = bench.us(asyncio.run(bench.echo_rtts(srv.host, srv.port, args.n)))
            r = bench.rmctl_bench(srv, "--count", str(args.n), "--sessions", "2",
                                  "--items", "1", "--item-size", "1K",
                                  "--parallel", "8", "--duration", "2s")
            res[tree].append({"py_call_us": call, "py_echo_us": echo,
                              "py_ratio": call / echo,
                              "rmctl_call_us": r["call"]["p50_us"],
                              "rmctl_echo_us": r["echo"]["p50_us"],
                              "calls_per_s": r["throughput"]["calls_per_s"]})
    finally:
        for srv in servers.values():
            srv.stop()
            srv.cleanup()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("calls", "opens", "serves"))
    ap.add_argument("trees", nargs=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--pin", action="store_true")
    args = ap.parse_args()
    res = {"calls": calls, "opens": opens, "serves": serves}[args.what](args)
    for tree, rows in res.items():
        cols = {k: [row[k] for row in rows] for k in rows[0]}
        print(tree)
        for k, v in cols.items():
            print(f"  {k:10s} median {statistics.median(v):8.2f}   rounds "
                  + " ".join(f"{x:.2f}" for x in v))


if __name__ == "__main__":
    main()
