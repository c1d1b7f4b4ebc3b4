#!/usr/bin/python3
"""make bench: the figures of architecture section 8 that exist so far, each
beside its reference measured in the same run, printed as one table.

- method call round trip through a Session (Python client), beside the same
  client's ping-pong on the Echo RPC (grpc.aio, one bidi stream);
- open-to-first-result of a session with no packages.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import grpc  # noqa: E402

from remotemedia._proto import remotemedia_pb2 as pb  # noqa: E402
from remotemedia.remote import RemoteProxyClient  # noqa: E402
from pkgindex import PackageIndex, build_test_packages  # noqa: E402
from serverlib import Server  # noqa: E402


class Trivial:
    def ping(self, x):
        return x

    def big(self, data):
        return data


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(p * len(s)))]


async def echo_rtts(host: str, port: int, n: int) -> list[float]:
    """Ping-pong on one Echo stream with grpc.aio: the floor."""
    async with grpc.aio.insecure_channel(f"{host}:{port}") as ch:
        call = ch.stream_stream(
            "/remotemedia.v1.RemoteExecution/Echo",
            request_serializer=pb.EchoMessage.SerializeToString,
            response_deserializer=pb.EchoMessage.FromString)()
        msg = pb.EchoMessage(payload=b"x" * 16)
        out = []
        for i in range(n):
            t = time.perf_counter()
            await call.write(msg)
            await call.read()
            out.append(time.perf_counter() - t)
        await call.done_writing()
        await call.code()
        return out


async def call_rtts(config, n: int) -> list[float]:
    async with RemoteProxyClient(config) as client:
        proxy = await client.create_proxy(Trivial())
        out = []
        for i in range(n):
            t = time.perf_counter()
            await proxy.ping(i)
            out.append(time.perf_counter() - t)
        return out


async def open_times(config, n: int) -> list[float]:
    out = []
    async with RemoteProxyClient(config) as client:
        for i in range(n):
            t = time.perf_counter()
            proxy = await client.create_proxy(Trivial())
            await proxy.ping(1)
            out.append(time.perf_counter() - t)
            await client.close_proxy(proxy)
    return out


async def big_round_trip(config, size: int, n: int) -> list[float]:
    payload = os.urandom(size)
    async with RemoteProxyClient(config) as client:
        proxy = await client.create_proxy(Trivial())
        out = []
        for i in range(n):
            t = time.perf_counter()
            got = await proxy.big(payload)
            out.append(time.perf_counter() - t)
            assert got == payload
        return out


class App:
    def hello(self):
        import rmtest_app
        return rmtest_app.hello()


async def ready_times(config, n: int, reqs_for=None) -> list[float]:
    """create_proxy until Ready, n times; reqs_for(i) varies the requirements."""
    from dataclasses import replace
    out = []
    for i in range(n):
        cfg = replace(config, pip_packages=reqs_for(i)) if reqs_for else config
        async with RemoteProxyClient(cfg) as client:
            await client.connect()
            t = time.perf_counter()
            proxy = await client.create_proxy(App())
            out.append(time.perf_counter() - t)
            await client.close_proxy(proxy)
    return out


async def env_rows(srv, args) -> list[str]:
    """Ready time: cold install, cached environment, no packages."""
    base = srv.config(timeout=120.0)
    cold = await ready_times(base, args.cold,
                             lambda i: ["rmtest-app", f"rmtest-base>=1.0,!=9.{i}.{os.getpid()}"])
    warm_cfg = srv.config(timeout=60.0, pip_packages=["rmtest-app"])
    await ready_times(warm_cfg, 1)  # build it once
    hit = await ready_times(warm_cfg, args.sessions)
    none = await ready_times(srv.config(timeout=60.0), args.sessions)
    hit2 = await ready_times(warm_cfg, args.sessions)
    none2 = await ready_times(srv.config(timeout=60.0), args.sessions)
    hit, none = hit + hit2, none + none2
    delta = (pct(hit, 0.5) - pct(none, 0.5)) * 1e3
    return [
        row("session ready, cold install (2 wheels, local index)", cold,
            "no packages", none, unit="ms"),
        row("session ready, cached environment", hit, "no packages", none, unit="ms")
        + f" (+{delta:.1f} ms)",
        row("session ready, no packages", none, "fresh exec, no zygote", None, unit="ms"),
    ]


def row(name: str, samples: list[float], ref_name: str, ref: list[float] | None,
        unit: str = "us") -> str:
    scale = 1e6 if unit == "us" else 1e3
    p50, p99 = pct(samples, 0.5) * scale, pct(samples, 0.99) * scale
    if ref:
        r50 = pct(ref, 0.5) * scale
        return (f"| {name} | {p50:.0f} {unit} | {p99:.0f} {unit} | {ref_name}: "
                f"{r50:.0f} {unit} | {p50 / r50:.2f} |")
    return f"| {name} | {p50:.0f} {unit} | {p99:.0f} {unit} | {ref_name} | |"


async def sandbox_rows(args) -> list[str]:
    """Session start-up with the sandbox on and off, in the same run."""
    rows = []
    servers = {
        "sandbox off": Server(["--sandbox", "off"]),
        "sandbox on, network off": Server(["--session-network", "off"]),
        "sandbox on, network isolated": Server(["--session-network", "isolated"]),
    }
    try:
        times = {name: await open_times(srv.config(timeout=60.0), args.sessions)
                 for name, srv in servers.items()}
        off = times["sandbox off"]
        for name, t in times.items():
            rows.append(row(f"session open to first result, {name}", t,
                            "sandbox off", off if name != "sandbox off" else None,
                            unit="ms"))
    finally:
        for srv in servers.values():
            srv.stop()
            srv.cleanup()
    return rows


async def run(args) -> None:
    wheels = build_test_packages(Path(os.environ.get("TMPDIR", "/tmp")) / f"rm-bench-wheels-{os.getpid()}")
    idx = PackageIndex([w for ws in wheels.values() for w in ws])
    srv = Server(["--pip-index-url", idx.url])
    try:
        config = srv.config(timeout=60.0)
        echo = await echo_rtts(srv.host, srv.port, args.n)
        calls = await call_rtts(config, args.n)
        echo2 = await echo_rtts(srv.host, srv.port, args.n)
        opens = await open_times(config, args.sessions)
        big = await big_round_trip(config, 64 * 1024 * 1024, args.big)
        envs = await env_rows(srv, args)
        sand = await sandbox_rows(args) if os.geteuid() == 0 else []
        print(f"remotemedia benchmarks ({os.cpu_count()} cores, "
              f"{args.n} calls, {args.sessions} sessions)")
        print()
        print("| what | p50 | p99 | reference (same run), p50 | ratio |")
        print("|---|---|---|---|---|")
        print(row("Echo ping-pong, Python client (grpc.aio)", echo + echo2,
                  "floor", None))
        print(row("method call round trip, Python client", calls,
                  "Echo ping-pong", echo + echo2))
        print(row("session open to first result, no packages", opens,
                  "fresh exec, no zygote", None, unit="ms"))
        print(row("64 MiB round trip (64 MiB each way)", big,
                  "one 64 MiB value each way", None, unit="ms"))
        for line in envs + sand:
            print(line)
    finally:
        srv.stop()
        srv.cleanup()
        idx.close()
        import shutil
        shutil.rmtree(Path(os.environ.get("TMPDIR", "/tmp")) / f"rm-bench-wheels-{os.getpid()}",
                      ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="calls per round-trip figure")
    ap.add_argument("--sessions", type=int, default=30, help="sessions opened")
    ap.add_argument("--big", type=int, default=3, help="64 MiB round trips")
    ap.add_argument("--cold", type=int, default=5, help="cold installs")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
