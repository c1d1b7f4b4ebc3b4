#!/usr/bin/python3
"""The Python client's own CPU time per call, without gRPC or a server:
the library's share of a call, which this VM's noise hides in a real one.

  bench/clientcost.py [--rounds N] [--calls N] TREE [TREE ...]

Each TREE is a client package tree (a python/ directory). Each round runs
each tree in a child process, in turn: a Session over a stand-in for
grpc.aio's stream (its write queues the Result of the call just written,
its read takes it), 500 calls to warm up, then --calls calls of one small
argument, timed with the main thread's CPU clock. Prints each tree's
rounds and their median, in us a call.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import asyncio, sys, time
sys.path.insert(0, sys.argv[1])
import grpc
from remotemedia import RemoteExecutorConfig
from remotemedia.remote import wire
from remotemedia.remote.session import Session
pb = wire.pb

class Stream:
    """What Session uses of grpc.aio's stream-stream call."""
    def __init__(self):
        self.written = 0
        self.replies = asyncio.Queue()
    async def write(self, message):
        self.written += 1
        if self.written > 1:  # the first is the Open
            res = pb.ServerMessage()
            res.result.call_id = self.written - 1
            res.result.value.data = b"\x80\x05K\x01."
            self.replies.put_nowait(res)
    async def done_writing(self):
        pass
    async def read(self):
        return await self.replies.get()
    def cancel(self):
        self.replies.put_nowait(grpc.aio.EOF)
        return True
    def done(self):
        return False

async def main(n):
    config = RemoteExecutorConfig(host="127.0.0.1", port=1, timeout=5.0)
    opening = wire.open_messages(b"object", pb.FORMAT_PICKLE, [])
    session = Session(Stream(), pb.FORMAT_PICKLE, config, opening)
    session.set_ready(pb.Ready(session_id="s1"))
    doc = wire.encode_args(pb.FORMAT_PICKLE, (1,), {})
    for _ in range(500):
        await session.call("ping", pb.CALL_METHOD, doc)
    start = time.thread_time()
    for _ in range(n):
        await session.call("ping", pb.CALL_METHOD, doc)
    return (time.thread_time() - start) / n * 1e6

print(asyncio.run(main(int(sys.argv[2]))))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    res: dict[str, list[float]] = {t: [] for t in args.trees}
    for _ in range(args.rounds):
        for tree in args.trees:
            out = subprocess.run([sys.executable, "-c", CHILD, str(Path(tree).resolve()),
                                  str(args.calls)], capture_output=True, text=True,
                                 check=True, timeout=600)
            res[tree].append(float(out.stdout))
    for tree, v in res.items():
        print(f"{tree}: median {statistics.median(v):.2f} us a call; rounds "
              + " ".join(f"{x:.2f}" for x in v))


if __name__ == "__main__":
    main()
