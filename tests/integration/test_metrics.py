"""--metrics-listen: Prometheus text format, scraped over HTTP and parsed
with prometheus_client's own parser (Debian python3-prometheus-client),
after sessions, calls, an environment build, a refused session and
workers that ended in each way the front tells apart.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -q \
    tests/integration/test_metrics.py
"""
from __future__ import annotations

import http.client
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clientlib import runner
from pkgindex import PackageIndex, build_test_packages
from remotemedia.core.exceptions import RemoteMediaError
from remotemedia.remote import RemoteProxyClient
from serverlib import wait_for


class Target:
    def ping(self, x):
        return x

    def die(self, how):
        import os
        import signal
        if how == "signal":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)


class App:
    def hello(self):
        import rmtest_app
        return rmtest_app.hello()


run = runner(120.0)


def metrics_port(srv) -> int:
    m = wait_for(lambda: re.search(r"metrics on 127\.0\.0\.1:(\d+)", srv.log_text()),
                 10, "the metrics address in the log")
    return int(m.group(1))


def get(port: int, path: str = "/metrics", method: str = "GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


def scrape(port: int) -> dict[str, dict]:
    """{sample name: {labels tuple: value}} from a strict parse."""
    status, headers, text = get(port)
    assert status == 200, (status, text)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: dict[str, dict] = {}
    for fam in text_string_to_metric_families(text):
        assert fam.documentation, fam.name  # every family has HELP
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(samples: dict, name: str, **labels) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def check_histogram(samples: dict, name: str) -> None:
    buckets = sorted(((float(dict(k)["le"]), v) for k, v in samples[name + "_bucket"].items()))
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{name} buckets are not cumulative"
    assert buckets[-1][0] == float("inf")
    assert buckets[-1][1] == one(samples, name + "_count")


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    wheels = build_test_packages(tmp_path_factory.mktemp("wheels"))
    with PackageIndex([w for ws in wheels.values() for w in ws]) as index:
        yield index


def test_metrics_count_sessions_calls_builds_refusals_and_exits(fresh_server, idx):
    srv = fresh_server(["--metrics-listen", "127.0.0.1:0", "--pip-index-url", idx.url,
                        "--max-sessions", "2", "--session-pool", "0"])
    port = metrics_port(srv)
    before = scrape(port)
    assert one(before, "remotemedia_sessions_active") == 0
    assert one(before, "remotemedia_calls_total") == 0
    for cause in ("clean", "limit", "deadline", "killed", "signal", "error"):
        assert one(before, "remotemedia_worker_exits_total", cause=cause) == 0

    async def main():
        async with RemoteProxyClient(srv.config(timeout=60.0)) as client:
            p = await client.create_proxy(Target())
            for i in range(25):
                assert await p.ping(i) == i
            mid = scrape(port)
            # A third session is over --max-sessions 2 while two are open.
            q = await client.create_proxy(Target())
            with pytest.raises(RemoteMediaError):
                await client.create_proxy(Target())
            await client.close_proxy(q)
            # Workers that die: a signal, and an exit code.
            for how in ("signal", "exit"):
                d = await client.create_proxy(Target())
                with pytest.raises(RemoteMediaError):
                    await d.die(how)
            await client.close_proxy(p)
            # A cold environment, then the same one warm.
            cfg = srv.config(timeout=120.0, pip_packages=["rmtest-app"])
            async with RemoteProxyClient(cfg) as pip_client:
                for _ in range(2):
                    a = await pip_client.create_proxy(App())
                    assert await a.hello() == "app 2.0"
                    await pip_client.close_proxy(a)
            return mid
    mid = run(main())
    assert one(mid, "remotemedia_sessions_active") == 1
    assert one(mid, "remotemedia_calls_total") == 25
    assert one(mid, "remotemedia_call_duration_seconds_count") == 25
    check_histogram(mid, "remotemedia_call_duration_seconds")

    wait_for(lambda: one(scrape(port), "remotemedia_sessions_active") == 0, 20,
             "every session to end")
    after = scrape(port)
    assert one(after, "remotemedia_sessions_total") == 6  # 4 + 2 with packages; not the refused
    assert one(after, "remotemedia_sessions_refused_total") == 1
    assert one(after, "remotemedia_calls_total") == 25 + 2 + 2
    # The two calls whose worker died never got an answer to time.
    assert one(after, "remotemedia_call_duration_seconds_count") == 25 + 2
    assert one(after, "remotemedia_worker_exits_total", cause="signal") == 1
    assert one(after, "remotemedia_worker_exits_total", cause="error") == 1
    assert one(after, "remotemedia_worker_exits_total", cause="clean") == 4
    assert one(after, "remotemedia_env_cache_misses_total") == 1
    assert one(after, "remotemedia_env_cache_hits_total") == 1
    assert one(after, "remotemedia_env_build_duration_seconds_count") == 1
    assert one(after, "remotemedia_env_build_duration_seconds_sum") > 0
    check_histogram(after, "remotemedia_env_build_duration_seconds")
    check_histogram(after, "remotemedia_call_duration_seconds")
    assert one(after, "remotemedia_start_time_seconds") > 1.7e9


def test_metrics_server_answers_only_get_and_head_on_its_path(fresh_server):
    srv = fresh_server(["--metrics-listen", "127.0.0.1:0", "--session-pool", "1"])
    port = metrics_port(srv)
    wait_for(lambda: one(scrape(port), "remotemedia_spare_sessions") == 1, 20,
             "the spare to start")
    status, headers, body = get(port, "/metrics", "HEAD")
    # What GET would send, said and not sent: a keep-alive client that
    # read the body as the next response would misread everything.
    assert status == 200 and body == ""
    assert int(headers["Content-Length"]) == len(get(port)[2].encode())
    assert get(port, "/")[0] == 404
    assert get(port, "/metrics/x")[0] == 404
    assert get(port, "/metrics?name[]=x")[0] == 200
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "BREW"):
        status, headers, _ = get(port, "/metrics", method)
        assert status == 405 and headers["Allow"] == "GET, HEAD", (method, status)
    # Garbage on the metrics port does not disturb the gRPC side.
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\x00\xff garbage\r\n\r\n" * 100)
        s.settimeout(5)
        try:
            s.recv(4096)
        except OSError:
            pass

    async def main():
        async with RemoteProxyClient(srv.config()) as client:
            return await (await client.create_proxy(Target())).ping(7)
    assert run(main()) == 7
    assert scrape(port)["remotemedia_sessions_total"]


def test_metrics_count_connections_and_those_refused(fresh_server):
    import socket
    from h2raw import H2Client, echo_ok
    srv = fresh_server(["--metrics-listen", "127.0.0.1:0", "--max-connections", "1",
                        "--session-pool", "0"])
    port = metrics_port(srv)
    assert one(scrape(port), "remotemedia_connections_active") == 0
    assert one(scrape(port), "remotemedia_connections_refused_total") == 0
    held = H2Client(srv.host, srv.port)
    try:
        echo_ok(srv.host, srv.port, c=held)
        assert one(scrape(port), "remotemedia_connections_active") == 1
        for _ in range(3):
            socket.create_connection((srv.host, srv.port), timeout=5).close()
        wait_for(lambda: one(scrape(port), "remotemedia_connections_refused_total") == 3,
                 10, "three refusals counted")
        assert one(scrape(port), "remotemedia_connections_active") == 1
    finally:
        held.close()
    wait_for(lambda: one(scrape(port), "remotemedia_connections_active") == 0, 10,
             "the connection to be counted out")


def test_metrics_connections_are_bounded_and_get_ten_seconds(fresh_server):
    """Clients that connect and trickle bytes, never ending a request: the
    metrics server holds 32 of them, each for 10 s from its accept however
    it trickles, and closes the rest at once; the gRPC side is not
    disturbed, and a scrape works once they are gone."""
    import socket
    import time
    from h2raw import echo_ok
    srv = fresh_server(["--metrics-listen", "127.0.0.1:0", "--session-pool", "0"])
    port = metrics_port(srv)
    socks = []
    try:
        t0 = time.monotonic()
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metr")
            socks.append(s)

        def closed(s, wait):
            s.settimeout(wait)
            try:
                return s.recv(4096) == b""
            except socket.timeout:
                return False
            except OSError:
                return True

        wait_for(lambda: sum(closed(s, 0.01) for s in socks) >= 8, 10,
                 "the connections over 32 to be closed")
        echo_ok(srv.host, srv.port)
        held = [s for s in socks if not closed(s, 0.01)]
        assert len(held) == 32, len(held)
        while time.monotonic() - t0 < 8:  # trickling does not extend it
            for s in held:
                s.sendall(b"i")
            time.sleep(1)
        assert all(closed(s, 15 - (time.monotonic() - t0)) for s in held)
        assert time.monotonic() - t0 < 14
    finally:
        for s in socks:
            s.close()
    assert one(scrape(port), "remotemedia_sessions_total") == 0


def test_a_bad_metrics_address_stops_the_daemon_with_its_name(fresh_server):
    import subprocess
    from serverlib import BUILD
    r = subprocess.run([str(BUILD / "remotemediad"), "--listen", "127.0.0.1:0",
                        "--metrics-listen", "not-an-address"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "--metrics-listen" in r.stderr, r.stderr
