#!/usr/bin/python3
"""make bench: every figure of architecture section 8, each beside its
reference measured in the same run and its target, printed as one table
(figure, value, reference, ratio, target, met) and written as JSON
(build/bench.json).

- the Python client's method call beside its own Echo ping-pong, also
  with the client held to one CPU;
- open to first result with no packages, sandbox off and on (off: beside
  the same open with grpc.aio alone, the floor of the Python client's);
- a cached environment's ready time beside a cold install;
- rmctl bench (the C client): call round trip beside Echo, a generator of
  1 MiB items, small calls per second over many sessions, and the knee;
- private memory per idle session (smaps_rollup of the front and workers),
  with the default isolated network and with --session-network off.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "tests" / "lib"))

import grpc  # noqa: E402

from remotemedia._proto import remotemedia_pb2 as pb  # noqa: E402
from remotemedia.remote import RemoteProxyClient, wire  # noqa: E402
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


def raw_session_rpc(ch: grpc.aio.Channel):
    """The Session method on ch with grpc.aio alone, without the client library."""
    return ch.stream_stream(
        "/remotemedia.v1.RemoteExecution/Session",
        request_serializer=wire.serialize,
        response_deserializer=pb.ServerMessage.FromString)


async def raw_open(rpc, payload) -> grpc.aio.StreamStreamCall:
    """Open a session of the pickled payload on a new stream; once Ready."""
    call = rpc()
    for m in wire.open_messages(payload, pb.FORMAT_PICKLE, []):
        await call.write(m)
    while (await call.read()).WhichOneof("msg") != "ready":
        pass
    return call


def ping_message(i: int):
    """The Call message of ping(i), call id i."""
    (msg,) = wire.call_messages(i, "ping", pb.CALL_METHOD,
                                wire.encode_args(pb.FORMAT_PICKLE, (i,), {}), 60000)
    return msg


async def raw_ping(call, msg) -> None:
    """Send an encoded Call of ping; await its result."""
    await call.write(msg)
    reply = await call.read()
    assert reply.WhichOneof("msg") == "result", reply


async def raw_close(call) -> None:
    """Close the session and wait for the stream's end."""
    await call.write(wire.close_message())
    await call.done_writing()
    await call.code()


async def raw_session_rtts(host: str, port: int, n: int) -> list[float]:
    """Ping-pong of pre-encoded Call messages on a Session stream with
    grpc.aio, without the client library: what the server's relay to the
    worker adds to Echo, apart from the library's own cost. Warmed up as
    call_rtts is, so that the two compare."""
    async with grpc.aio.insecure_channel(f"{host}:{port}") as ch:
        call = await raw_open(raw_session_rpc(ch), wire.dump_object(Trivial()))
        await asyncio.sleep(0.3)  # the server refills its spares first
        for i in range(1, 101):
            await raw_ping(call, ping_message(i))
        out = []
        for i in range(101, n + 101):
            msg = ping_message(i)
            t = time.perf_counter()
            await raw_ping(call, msg)
            out.append(time.perf_counter() - t)
        await raw_close(call)
        return out


async def raw_open_times(host: str, port: int, n: int, pace: float = 0.2) -> list[float]:
    """open_times with grpc.aio alone: the object pickled beforehand, then
    the Session stream, Open, Ready, and one pre-encoded call. The floor
    of the Python client's open, apart from the library's own cost."""
    payload = wire.dump_object(Trivial())
    msg = ping_message(1)
    out = []
    async with grpc.aio.insecure_channel(f"{host}:{port}") as ch:
        await ch.channel_ready()
        rpc = raw_session_rpc(ch)
        for i in range(n):
            await asyncio.sleep(pace)
            t = time.perf_counter()
            call = await raw_open(rpc, payload)
            await raw_ping(call, msg)
            out.append(time.perf_counter() - t)
            await raw_close(call)
    return out


async def call_rtts(config, n: int) -> list[float]:
    async with RemoteProxyClient(config) as client:
        proxy = await client.create_proxy(Trivial())
        await asyncio.sleep(0.3)  # the server refills its spares first
        for i in range(100):
            await proxy.ping(i)
        out = []
        for i in range(n):
            t = time.perf_counter()
            await proxy.ping(i)
            out.append(time.perf_counter() - t)
        return out


# A child of pinned_call_figures: Echo, the call, the call with grpc.aio
# alone, and Echo again.
PINNED = r'''
import asyncio, json, os, sys
os.sched_setaffinity(0, {int(sys.argv[5])})  # before gRPC starts its threads
sys.path.insert(0, sys.argv[1])
import bench
from remotemedia import RemoteExecutorConfig
host, port, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

async def main():
    echo = await bench.echo_rtts(host, port, n)
    cfg = RemoteExecutorConfig(host=host, port=port, timeout=60.0)
    calls = await bench.call_rtts(cfg, n)
    raw = await bench.raw_session_rtts(host, port, n)
    echo += await bench.echo_rtts(host, port, n)
    return {"call_us": bench.us(calls), "raw_us": bench.us(raw),
            "echo_us": bench.us(echo)}

print(json.dumps(asyncio.run(main())))
'''


def pinned_call_figures(srv, n: int) -> dict | None:
    """The Python client's call, the same call with grpc.aio alone and
    their Echo, p50 in us, from a child process held to one CPU, with
    grpc.aio's poller thread beside its event loop's; None on a machine
    of one CPU. Unpinned, the Echo's p50 swung between 70.8 and 222.7 us
    from run to run on the 2-core VM, and the call's ratio with it; held
    to one CPU it took about 64 us."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        return None
    out = subprocess.run(
        [sys.executable, "-c", PINNED, str(ROOT / "bench"), srv.host, str(srv.port), str(n),
         str(max(cpus))],
        capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"the pinned client failed:\n{out.stderr}")
    return json.loads(out.stdout)


async def open_times(config, n: int, pace: float = 0.2) -> list[float]:
    """Open to first result, n times, one open every pace seconds: the
    latency of an open once the server's spares have refilled (pace 0:
    back to back, how a burst fares)."""
    out = []
    async with RemoteProxyClient(config) as client:
        for i in range(n):
            if i:
                await asyncio.sleep(pace)
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


async def ready_times(config, n: int, reqs_for=None, pace: float = 0.2) -> list[float]:
    """create_proxy until Ready, n times, one every pace seconds (so that
    the server's spares refill); reqs_for(i) varies the requirements."""
    from dataclasses import replace
    out = []
    for i in range(n):
        if i:
            await asyncio.sleep(pace)
        cfg = replace(config, pip_packages=reqs_for(i)) if reqs_for else config
        async with RemoteProxyClient(cfg) as client:
            await client.connect()
            t = time.perf_counter()
            proxy = await client.create_proxy(App())
            out.append(time.perf_counter() - t)
            await client.close_proxy(proxy)
    return out


ENV_REQS = ["rmtest-app"]
RMCTL = ROOT / "build" / "rmctl"


class Table:
    """The figures of one run: each with its same-run reference and target.

    target is (op, bound) with op "<=" or ">=", applied to the value (or to
    the ratio when on="ratio"); met is None where a figure has no target.
    """

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, figure: str, value: float, unit: str, ref_name: str = "",
            ref: float | None = None, target: tuple | None = None,
            on: str = "value", note: str = "") -> None:
        ratio = value / ref if ref else None
        met = None
        if target:
            op, bound = target
            x = ratio if on == "ratio" else value
            met = x <= bound if op == "<=" else x >= bound
        self.rows.append(dict(figure=figure, value=round(value, 3), unit=unit,
                              reference=ref_name, reference_value=None if ref is None
                              else round(ref, 3), ratio=None if ratio is None
                              else round(ratio, 3),
                              target=None if not target else
                              f"{'ratio' if on == 'ratio' else 'value'} {target[0]} {target[1]}",
                              met=met, note=note))

    def print(self) -> None:
        print("| figure | value | reference (same run) | ratio | target | met |")
        print("|---|---|---|---|---|---|")
        for r in self.rows:
            ref = (f"{r['reference']}: {r['reference_value']:g} {r['unit']}"
                   if r["reference_value"] is not None else r["reference"])
            ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
            met = {None: "", True: "yes", False: "NO"}[r["met"]]
            note = f" ({r['note']})" if r["note"] else ""
            print(f"| {r['figure']}{note} | {r['value']:g} {r['unit']} | {ref} | "
                  f"{ratio} | {r['target'] or ''} | {met} |")


def ms(samples: list[float]) -> float:
    return pct(samples, 0.5) * 1e3


def us(samples: list[float]) -> float:
    return pct(samples, 0.5) * 1e6


def rmctl_bench(srv, *extra: str) -> dict:
    """`rmctl bench --json` against srv: the C client's figures."""
    out = subprocess.run([str(RMCTL), "bench", "--port", str(srv.port), "--json",
                          "--timeout", "60s", *extra],
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)


def rmctl_open_ms(srv, sessions: int) -> float:
    """rmctl bench's open to first result against srv, p50 in ms: one
    open every --pace, the rest of its figures kept short."""
    r = rmctl_bench(srv, "--count", "10", "--sessions", str(sessions), "--items", "1",
                    "--item-size", "1K", "--parallel", "1", "--duration", "100ms")
    return r["session"]["p50_us"] / 1e3


def parent_of(pid: int) -> int | None:
    """pid's parent, from /proc; None if pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    """pid's descendant processes, from /proc."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (ppid := parent_of(int(d))) is not None:
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for k in kids.get(p, []):
            out.append(k)
            todo.append(k)
    return out


def private_kib(pid: int) -> int:
    """Private_Clean + Private_Dirty of pid, from smaps_rollup."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    except OSError:
        pass
    return total


def mem_available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def bare_python_kib() -> int:
    """Private memory of a bare interpreter (/usr/bin/python3 -I): what a
    program run by the host's Python holds before its own work. It runs
    the host's .pth files whole, which a worker does not (_setup_site in
    the worker's runtime)."""
    proc = subprocess.Popen(["/usr/bin/python3", "-I", "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        time.sleep(0.5)
        return private_kib(proc.pid)
    finally:
        proc.stdin.close()
        proc.wait()


def process_kinds(procs: list[int]) -> dict[str, int]:
    """KiB of private memory of these processes by kind: the sessions'
    interpreters (workers with no child), the sandbox's helper processes
    (workers with children), and slirp4netns."""
    parents = {parent_of(p) for p in procs}
    kinds: dict[str, int] = {"interpreters": 0, "helpers": 0, "slirp4netns": 0}
    for p in procs:
        try:
            comm = Path(f"/proc/{p}/comm").read_text().strip()
        except OSError:
            continue
        kind = ("slirp4netns" if comm == "slirp4netns" else
                "helpers" if p in parents else "interpreters")
        kinds[kind] += private_kib(p)
    return kinds


async def idle_memory(srv, n: int) -> tuple[float, int, dict[str, int]]:
    """MiB of private memory per idle session, how many were open, and the
    KiB of each kind of process (process_kinds) and of the front's growth:
    n sessions at once (fewer if this host lacks 16 MiB free for each), the
    front's growth plus every process of every session. A connection
    carries at most 100 streams (--max-streams), so sessions are spread
    over one client per 100."""
    n = max(1, min(n, mem_available_mib() // 16))
    front0 = private_kib(srv.proc.pid)
    clients = [RemoteProxyClient(srv.config(timeout=120.0)) for _ in range((n + 99) // 100)]
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        proxies = []
        for i in range(n):
            proxies.append(await clients[i // 100].create_proxy(Trivial()))
        await asyncio.sleep(0.5)
        kinds = process_kinds(descendants(srv.proc.pid))
        kinds["front"] = private_kib(srv.proc.pid) - front0
        assert sum(await asyncio.gather(*(p.ping(1) for p in proxies))) == n
    finally:
        await asyncio.gather(*(c.disconnect() for c in clients))
    return sum(kinds.values()) / n / 1024, n, kinds


async def env_figures(srv, args, table: Table, none_ms: float) -> None:
    """Ready time of a cached environment, beside a cold install."""
    base = srv.config(timeout=120.0)
    cold = await ready_times(base, args.cold,
                             lambda i: ENV_REQS + [f"rmtest-base>=1.0,!=9.{i}.{os.getpid()}"])
    warm_cfg = srv.config(timeout=60.0, pip_packages=ENV_REQS)
    await ready_times(warm_cfg, 1)  # build it once
    hit = await ready_times(warm_cfg, args.sessions)
    table.add("session ready, cached environment", ms(hit), "ms",
              "cold install (2 wheels, local index)", ms(cold), ("<=", 25),
              note=f"no packages: {none_ms:.1f} ms")


async def sandbox_figures(args, table: Table) -> float:
    """Open to first result with the sandbox on and off; the on figure."""
    servers = {"off": Server(["--sandbox", "off"]),
               "on": Server(["--session-network", "off"])}
    try:
        t = {k: await open_times(s.config(timeout=60.0), args.sessions)
             for k, s in servers.items()}
        raw = await raw_open_times(servers["off"].host, servers["off"].port, args.sessions)
        await asyncio.sleep(0.5)
        burst = await open_times(servers["on"].config(timeout=60.0), args.sessions, 0)
        rmctl_off = rmctl_open_ms(servers["off"], args.sessions)
        rmctl_on = rmctl_open_ms(servers["on"], args.sessions)
        fresh_srv = Server(["--session-network", "off", "--session-pool", "0"])
        servers["fresh"] = fresh_srv
        # A reference 30-70 times the figures: a third of the samples
        # pays for the grpc.aio open above in the run's five minutes.
        fresh = await open_times(fresh_srv.config(timeout=60.0), max(5, args.sessions // 3))
    finally:
        for s in servers.values():
            s.stop()
            s.cleanup()
    table.add("session open to first result, no packages, sandbox off",
              ms(t["off"]), "ms", "the same open, grpc.aio without the client library",
              ms(raw), ("<=", 2), note="spares, one open per 200 ms")
    table.add("session open to first result, no packages, sandbox off, rmctl",
              rmctl_off, "ms", "", None, ("<=", 2),
              note="spares, one open per 200 ms")
    table.add("session open to first result, no packages, sandbox on, rmctl",
              rmctl_on, "ms", "", None, ("<=", 5),
              note="spares, one open per 200 ms")
    table.add("session open to first result, no packages, sandbox on",
              ms(t["on"]), "ms", "fresh exec (--session-pool 0)", ms(fresh), ("<=", 5),
              note="spares, one open per 200 ms")
    table.add("session open to first result, back to back, sandbox on",
              ms(burst), "ms", "fresh exec (--session-pool 0)", ms(fresh),
              note=f"{args.sessions} opens, 2 spares")
    return ms(t["on"])


def rmctl_figures(srv, args, table: Table) -> None:
    """The C client's figures, and the knee: sessions against latency."""
    r = rmctl_bench(srv, "--count", str(args.n), "--sessions", str(args.sessions),
                    "--items", "512", "--parallel", "8", "--duration", "3s")
    table.add("method call round trip, rmctl bench", r["call"]["p50_us"], "us",
              "Echo, rmctl", r["echo"]["p50_us"], ("<=", 60))
    asleep = Server(["--session-busy-poll", "0"])
    try:
        p = rmctl_bench(asleep, "--count", str(args.n), "--sessions", "1",
                        "--items", "1", "--parallel", "1", "--duration", "1s")
    finally:
        asleep.stop()
        asleep.cleanup()
    table.add("the same, --session-busy-poll 0", p["call"]["p50_us"], "us",
              "Echo, rmctl", p["echo"]["p50_us"], None,
              note="workers sleep at once: what their polling gains")
    table.add("generator of 1 MiB items, rmctl bench", r["stream"]["mb_per_s"], "MB/s",
              "", None, (">=", 1000), note="512 items, out-of-band buffers")
    table.add("small calls over 8 sessions, rmctl bench",
              r["throughput"]["calls_per_s"], "calls/s", "", None, (">=", 50000))
    if os.geteuid() == 0:
        cpu_limit_row(srv, table)
    for n in args.knee:
        k = rmctl_bench(srv, "--count", "10", "--sessions", "1", "--items", "1",
                        "--item-size", "1K", "--parallel", str(n), "--duration", "2s")
        rate = k["throughput"]["calls_per_s"]
        # Little's law: 16 calls in flight per session.
        table.add(f"knee: {n} sessions, mean call latency", n * 16 / rate * 1e6, "us",
                  f"{rate:.0f} calls/s", None)


def cpu_limit_row(srv, table: Table) -> None:
    """What the sessions' CPU limit costs them: small calls over 8 sessions
    of srv (the default limit) and of a server with --session-cpu 0, in
    turn, twice each; the medians."""
    uncapped = Server(["--session-cpu", "0"])
    rates: list[list[float]] = [[], []]
    try:
        for _ in range(2):
            for i, s in enumerate((srv, uncapped)):
                r = rmctl_bench(s, "--count", "10", "--sessions", "1", "--items", "1",
                                "--parallel", "8", "--duration", "2s")
                rates[i].append(r["throughput"]["calls_per_s"])
    finally:
        uncapped.stop()
        uncapped.cleanup()
    table.add("the same calls, --session-cpu 0", statistics.median(rates[1]), "calls/s",
              "the default (100)", statistics.median(rates[0]), None,
              note="no CPU limit; on cgroup v1 sessions out of the cpu controller; "
              "medians of 2 alternated runs of 2 s")


async def idle_row(table: Table, srv, n: int, figure: str, bare: float) -> None:
    """The idle_memory figure of n sessions on srv, beside a bare python3."""
    mib, held, kinds = await idle_memory(srv, n)
    split = ", ".join(f"{k} {v / held / 1024:.2f}" for k, v in kinds.items()
                      if v or k != "slirp4netns")
    table.add(figure, mib, "MiB", "a bare interpreter (python3 -I)", bare, ("<=", 4),
              note=f"{held} open at once; MiB a session: {split}")


async def run(args) -> None:
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"rm-bench-wheels-{os.getpid()}"
    wheels = build_test_packages(tmp)
    idx = PackageIndex([w for ws in wheels.values() for w in ws])
    # Room for the idle sessions: one uid each, beside the spares.
    room = ["--max-sessions", str(args.idle + 10),
            "--session-uids", f"61000-{61000 + args.idle + 99}"]
    srv = Server(["--pip-index-url", idx.url, *room])
    table = Table()
    try:
        config = srv.config(timeout=60.0)
        echo = await echo_rtts(srv.host, srv.port, args.n)
        calls = await call_rtts(config, args.n)
        raw = await raw_session_rtts(srv.host, srv.port, args.n)
        echo2 = await echo_rtts(srv.host, srv.port, args.n)
        table.add("method call round trip, Python client", us(calls), "us",
                  "Echo ping-pong, same client", us(echo + echo2), ("<=", 1.15),
                  on="ratio")
        table.add("the same call, grpc.aio without the client library", us(raw), "us",
                  "Echo ping-pong, same client", us(echo + echo2),
                  note="pre-encoded Call messages: the worker's share of the gap")
        pinned = pinned_call_figures(srv, args.n)
        if pinned is not None:
            table.add("the same call, the client held to one CPU", pinned["call_us"], "us",
                      "Echo ping-pong, same client, same CPU", pinned["echo_us"],
                      note="gRPC's poller thread beside the event loop's")
            table.add("the same, grpc.aio without the client library, held to one CPU",
                      pinned["raw_us"], "us", "Echo ping-pong, same client, same CPU",
                      pinned["echo_us"], note="pre-encoded Call messages")
        none = await ready_times(srv.config(timeout=60.0), args.sessions)
        await env_figures(srv, args, table, ms(none))
        if os.geteuid() == 0:
            await sandbox_figures(args, table)
        rmctl_figures(srv, args, table)
        big = await big_round_trip(config, 64 * 1024 * 1024, args.big)
        table.add("64 MiB round trip, Python client", ms(big), "ms", "", None,
                  note="64 MiB each way")
        bare = bare_python_kib() / 1024
        await idle_row(table, srv, args.idle, "idle sessions, private memory each", bare)
        srv.stop()
        srv.cleanup()
        # The same without slirp4netns, which an isolated session runs;
        # half as many sessions, to keep make bench within its 5 minutes
        # (a session's share does not grow with their number).
        srv = Server(["--session-network", "off", *room])
        await idle_row(table, srv, max(1, args.idle // 2), "the same, --session-network off",
                       bare)
    finally:
        srv.stop()
        srv.cleanup()
        idx.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"remotemedia benchmarks ({os.cpu_count()} cores; {args.n} calls, "
          f"{args.sessions} sessions per figure)")
    print()
    table.print()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "rows": table.rows}, indent=1))
    print(f"\nwritten to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="calls per round-trip figure")
    ap.add_argument("--sessions", type=int, default=24, help="sessions opened")
    ap.add_argument("--big", type=int, default=3, help="64 MiB round trips")
    ap.add_argument("--cold", type=int, default=5, help="cold installs")
    ap.add_argument("--idle", type=int, default=1000, help="idle sessions held at once")
    ap.add_argument("--knee", type=int, nargs="*", default=[1, 4, 16, 64],
                    help="session counts for the latency knee")
    ap.add_argument("--json", default=str(ROOT / "build" / "bench.json"),
                    help="where to write the table as JSON")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
