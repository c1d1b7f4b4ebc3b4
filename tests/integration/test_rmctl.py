"""rmctl, the C command-line client, against the real server.

The `server` fixture (tests/integration/conftest.py) starts remotemediad on a
free loopback port and yields an object with `.host` and `.port`.
"""

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
RMCTL = REPO_ROOT / "build" / "rmctl"
TIMEOUT = 30  # seconds; no rmctl run may take longer


def rmctl(*args: str) -> subprocess.CompletedProcess:
    """Run build/rmctl with args; capture its output as text."""
    if not RMCTL.exists():
        pytest.fail(f"{RMCTL} is missing: run `make build/rmctl` first")
    return subprocess.run(
        [str(RMCTL), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def at(server) -> list:
    """The --host and --port flags that reach the test server."""
    return ["--host", str(server.host), "--port", str(server.port)]


def closed_port() -> int:
    """A loopback port with nothing listening on it (as of this call)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_health_serving(server):
    r = rmctl("health", *at(server))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "SERVING"


def test_health_named_service(server):
    r = rmctl("health", *at(server), "--service",
              "remotemedia.v1.RemoteExecution", "--timeout", "5s")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "SERVING"


def test_echo_message_round_trips(server):
    text = "hello, remotemedia: \u00e9\u00e8 42"
    r = rmctl("echo", *at(server), "--message", text)
    assert r.returncode == 0, r.stderr
    assert r.stdout == text + "\n"


def test_echo_count_prints_percentiles(server):
    r = rmctl("echo", *at(server), "--count", "200", "--size", "1K")
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r"count 200 p50 (\d+)us p99 (\d+)us\n", r.stdout)
    assert m, r.stdout
    p50, p99 = int(m.group(1)), int(m.group(2))
    assert 0 <= p50 <= p99


def test_echo_of_6_mb_gets_all_its_bytes_and_trailers(fresh_server):
    """A reply of several H2_OUT_HIGH rounds to a client with a large
    window that sends nothing while it waits: the front must keep writing
    on its own (it once stopped after 1 MiB, waiting for a frame)."""
    srv = fresh_server(["--max-message-size", "8M", "--session-pool", "0"])
    r = rmctl("echo", *at(srv), "--count", "3", "--size", "6000000",
              "--timeout", "10s")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("count 3 p50 "), r.stdout


def test_health_closed_port_cannot_connect():
    port = closed_port()
    r = rmctl("health", "--host", "127.0.0.1", "--port", str(port),
              "--timeout", "5s")
    assert r.returncode == 14  # UNAVAILABLE: exit codes follow gRPC's
    assert f"cannot connect to 127.0.0.1:{port}" in r.stderr
    assert r.stdout == ""


def test_bad_flag_is_usage_error():
    r = rmctl("health", "--no-such-flag")
    assert r.returncode == 2
    assert "--no-such-flag" in r.stderr


def test_bad_value_is_usage_error():
    r = rmctl("echo", "--count", "many")
    assert r.returncode == 2
    assert "--count" in r.stderr


@pytest.mark.parametrize("token", ["", "tab\there", "caf\u00e9", "t" * 1025,
                                   "trailing-space-token ", " leading-space"])
def test_a_token_the_server_cannot_take_is_a_usage_error(token):
    r = rmctl("--token", token, "health", "--port", "1")
    assert r.returncode == 2, r.stderr
    assert "--token: a token is 1 to 1024 printable ASCII characters, without a space at either end" in r.stderr


def test_help():
    r = rmctl("--help")
    assert r.returncode == 0
    for command in ("health", "info", "sessions", "kill", "run", "echo", "bench"):
        assert f"\n  {command} " in r.stdout, command


BENCH_SMALL = ["--count", "20", "--sessions", "2", "--items", "3",
               "--item-size", "4K", "--parallel", "2", "--duration", "200ms",
               "--pace", "10ms"]


def test_bench_json(server):
    r = rmctl("bench", *at(server), *BENCH_SMALL, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for name, count in (("echo", 20), ("call", 20), ("session", 2)):
        assert doc[name]["count"] == count
        assert 0 < doc[name]["p50_us"] <= doc[name]["p99_us"]
    assert doc["stream"]["items"] == 3
    # Each item is a pickle of 4 KiB of bytes: a little more than 4 KiB.
    assert 3 * 4096 < doc["stream"]["bytes"] < 3 * 4096 + 3 * 64
    assert doc["throughput"]["sessions"] == 2
    assert doc["throughput"]["calls"] > 0


def test_bench_stream_of_large_items_ends(server):
    """Items larger than the front's output high-water mark, to a client
    that reads at once: the last one's tail must not wait in nghttp2 for an
    event that never comes (a stall seen at a stream's end)."""
    for _ in range(5):
        r = rmctl("bench", *at(server), "--count", "2", "--sessions", "1",
                  "--items", "4", "--item-size", "1M", "--parallel", "1",
                  "--duration", "100ms", "--pace", "10ms", "--timeout", "10s",
                  "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["stream"]["items"] == 4


def test_bench_table(server):
    r = rmctl("bench", *at(server), *BENCH_SMALL)
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names == ["figure", "echo", "call", "session", "call/echo",
                     "stream", "throughput"]


@pytest.mark.parametrize("flag, value", [
    ("--parallel", "0"), ("--parallel", "257"), ("--items", "x"),
    ("--sessions", "-1"), ("--duration", "0"), ("--item-size", "65M"),
    ("--pace", "2m"), ("--pace", "soon"),
])
def test_bench_bad_value_is_usage_error(flag, value):
    r = rmctl("bench", flag, value)
    assert r.returncode == 2
    assert flag in r.stderr


def test_bench_refused_session_fails_cleanly(fresh_server):
    """A session the server refuses ends the bench with its status."""
    srv = fresh_server(["--max-sessions", "1"])
    r = rmctl("bench", *at(srv), *BENCH_SMALL, "--timeout", "20s")
    assert r.returncode == 1
    assert "RESOURCE_EXHAUSTED" in r.stderr
    assert "a throughput session did not open" in r.stderr


def test_bench_closed_port():
    port = closed_port()
    r = rmctl("bench", "--port", str(port), "--timeout", "5s")
    assert r.returncode == 14
    assert f"cannot connect to 127.0.0.1:{port}" in r.stderr
