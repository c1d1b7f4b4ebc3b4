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
  bench/ab.py bigs A B    64 MiB arguments and results: A and B are
                          client trees, as for calls; per round the median
                          of 3 uploads (a 64 MiB argument, a small result),
                          3 downloads (the reverse) and 3 round trips, and
                          the client's page faults and CPU time (all its
                          threads) in each
  bench/ab.py serves A B  the call figures of two builds (build
                          directories, as for opens), both serving at once:
                          per round the Python client's call p50 (this
                          tree's client), its grpc.aio Echo p50 and their
                          ratio, rmctl bench's call and Echo p50, and its
                          calls/s over 8 sessions (for 2 s; make bench
                          measures its small calls with the sandbox on)

rmctl is this tree's build/rmctl in every mode. A and B may be the same
tree: an A/A run shows the noise. --a-args and --b-args add server flags
to A's and B's servers (opens, serves), after `--sandbox off`, so that
one tree compares two configurations:

  bench/ab.py serves build build --a-args="--sandbox on" \
      --b-args="--sandbox on --session-cpu 0"

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
import shlex
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


# A child of bigs, with the client tree under test first on its path.
BIG = r'''
import asyncio, json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
from remotemedia import RemoteExecutorConfig, RemoteProxyClient

class Big:
    def up(self, data):
        return len(data)

    def down(self, n):
        return bytes(n)

    def echo(self, data):
        return data

def usage():
    """The client process's page faults and CPU seconds (all its threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_minflt, ru.ru_utime + ru.ru_stime

async def main():
    data = os.urandom(64 << 20)
    cfg = RemoteExecutorConfig(host=sys.argv[2], port=int(sys.argv[3]), timeout=120.0)
    async with RemoteProxyClient(cfg) as client:
        big = await client.create_proxy(Big())
        await big.up(data)  # the first call's allocations are not the figure
        out = {}
        for name, call in (("up_ms", lambda: big.up(data)),
                           ("down_ms", lambda: big.down(len(data))),
                           ("round_trip_ms", lambda: big.echo(data))):
            times, flt, cpu = [], [], []
            for _ in range(3):
                (f, c), t = usage(), time.perf_counter()
                await call()
                times.append((time.perf_counter() - t) * 1e3)
                f2, c2 = usage()
                flt.append(f2 - f)
                cpu.append((c2 - c) * 1e3)
            out[name] = sorted(times)[1]
            stem = name[:-len("_ms")]
            out[stem + "_faults"] = sorted(flt)[1]
            out[stem + "_cpu_ms"] = sorted(cpu)[1]
    print(json.dumps(out))

asyncio.run(main())
'''


def rounds_of(trees: list[str], n: int):
    """(index, tree) of A and B in order, reversed every other round: by
    index, so that A and B may be the same tree (an A/A run shows the
    noise)."""
    both = list(enumerate(trees))
    for r in range(n):
        yield from (both if r % 2 == 0 else both[::-1])


def run_child(argv: list[str]) -> str:
    """A child's stdout; its stderr too if it fails."""
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{argv[:3]}... failed ({out.returncode}):\n{out.stderr}")
    return out.stdout


def client_rounds(args, script: str, *extra: str) -> list[list[dict]]:
    """Rounds of a child running script with each client tree first on its
    path, against one server of this tree's build: the JSON it prints."""
    srv = Server(["--sandbox", "off"])
    res: list[list[dict]] = [[], []]
    try:
        for i, tree in rounds_of(args.trees, args.rounds):
            out = run_child(["/usr/bin/python3", "-c", script, tree, srv.host,
                             str(srv.port), *extra])
            res[i].append(json.loads(out))
    finally:
        srv.stop()
        srv.cleanup()
    return res


def calls(args) -> list[list[dict]]:
    if args.pin:
        os.sched_setaffinity(0, {0})  # the server, started next, inherits it
    return client_rounds(args, PING, str(args.n), "pin" if args.pin else "-")


def bigs(args) -> list[list[dict]]:
    return client_rounds(args, BIG)


def opens(args) -> list[list[dict]]:
    res: list[list[dict]] = [[], []]
    for i, tree in rounds_of(args.trees, args.rounds):
        serverlib.BUILD = Path(tree).resolve()
        srv = Server(["--sandbox", "off", *args.server_args[i]])
        try:
            rmctl = bench.rmctl_open_ms(srv, 24)
            py = asyncio.run(bench.open_times(srv.config(timeout=60.0), 24))
        finally:
            srv.stop()
            srv.cleanup()
        res[i].append({"rmctl_ms": rmctl, "python_ms": bench.ms(py)})
    return res


def serves(args) -> list[list[dict]]:
    servers = []
    try:
        for tree, extra in zip(args.trees, args.server_args):
            serverlib.BUILD = Path(tree).resolve()
            servers.append(Server(["--sandbox", "off", *extra]))
        res: list[list[dict]] = [[], []]
        for i, _ in rounds_of(args.trees, args.rounds):
            srv = servers[i]
            out = run_child(["/usr/bin/python3", "-c", PING, str(ROOT / "python"),
                             srv.host, str(srv.port), str(args.n), "-"])
            call = json.loads(out)["p50_us"]
            echo = bench.us(asyncio.run(bench.echo_rtts(srv.host, srv.port, args.n)))
            r = bench.rmctl_bench(srv, "--count", str(args.n), "--sessions", "2",
                                  "--items", "1", "--item-size", "1K",
                                  "--parallel", "8", "--duration", "2s")
            res[i].append({"py_call_us": call, "py_echo_us": echo,
                           "py_ratio": call / echo,
                           "rmctl_call_us": r["call"]["p50_us"],
                           "rmctl_echo_us": r["echo"]["p50_us"],
                           "calls_per_s": r["throughput"]["calls_per_s"]})
    finally:
        for srv in servers:
            srv.stop()
            srv.cleanup()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("calls", "bigs", "opens", "serves"))
    ap.add_argument("trees", nargs=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--pin", action="store_true")
    ap.add_argument("--a-args", default="", help="more server flags for A (opens, serves)")
    ap.add_argument("--b-args", default="", help="the same for B")
    args = ap.parse_args()
    args.server_args = [shlex.split(args.a_args), shlex.split(args.b_args)]
    if args.pin and args.what != "calls":
        ap.error("--pin is for calls only")
    if (args.a_args or args.b_args) and args.what not in ("opens", "serves"):
        ap.error("--a-args and --b-args are for opens and serves only")
    if args.rounds < 1 or args.n < 1:
        ap.error("--rounds and --n must be at least 1")
    res = {"calls": calls, "bigs": bigs, "opens": opens, "serves": serves}[args.what](args)
    for label, tree, rows in zip("AB", args.trees, res):
        cols = {k: [row[k] for row in rows] for k in rows[0]}
        print(f"{label}: {tree}")
        for k, v in cols.items():
            print(f"  {k:13s} median {statistics.median(v):9.2f}   rounds "
                  + " ".join(f"{x:.2f}" for x in v))


if __name__ == "__main__":
    main()
