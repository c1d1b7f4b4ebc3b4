#!/usr/bin/python3
"""How much slower code runs here after its process slept: what a spare
worker meets when its Open comes.

It times an approximation of what an Open of source does in the worker:
compile rmctl bench's class with compile() (the worker's
_rmworker.compile skips one step), run the module, construct the object
with its defaults and list its names with dir() (the worker builds its
attribute map). Warm, then after sleeps of growing length, each in its
own rounds; median of the rounds, in µs. --cpu pins the process; --spin
also runs a nice 19 busy loop on that CPU for the whole run, so that the
vCPU never halts while the process sleeps.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench_source() -> str:
    """The Python source of rmctl bench's object, from src/rmctl_bench.c."""
    c = (ROOT / "src" / "rmctl_bench.c").read_text()
    m = re.search(r"rmctl_bench_source\[\]\s*=\s*(.*?);", c, re.S)
    if m is None or not m.group(1).isascii():
        sys.exit("coldness.py: no ASCII rmctl_bench_source in src/rmctl_bench.c")
    # The literal's only escapes are \n and \": Python reads them alike.
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))).encode().decode(
        "unicode_escape")


def open_like(source: str) -> float:
    """One Open's work on source, in µs."""
    t = time.perf_counter()
    module = types.ModuleType("bench_source")
    exec(compile(source, "<source>", "exec"), module.__dict__)
    dir(module.Bench())
    return (time.perf_counter() - t) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cpu", type=int)
    ap.add_argument("--spin", action="store_true")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    # SIGTERM unwinds as SystemExit does, through the spinner's kill below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    spinner = None
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
        if args.spin:
            spinner = subprocess.Popen(["nice", "-n", "19", "sh", "-c", "while :; do :; done"])
    elif args.spin:
        ap.error("--spin needs --cpu")
    try:
        source = bench_source()
        open_like(source)
        for sleep in (0, 0.0005, 0.002, 0.005, 0.02, 0.05, 0.2):
            times = []
            for _ in range(args.rounds):
                if sleep:
                    time.sleep(sleep)
                times.append(open_like(source))
            print(f"after {sleep * 1e3:6.1f} ms asleep: {statistics.median(times):6.1f} µs")
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


if __name__ == "__main__":
    main()
