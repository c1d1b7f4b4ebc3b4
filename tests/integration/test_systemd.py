"""remotemediad under systemd, without a systemd to run it: the notify
protocol against a socket of the test's own in NOTIFY_SOCKET, socket
activation for real with systemd-socket-activate, and `make install
DESTDIR=...` into a scratch root whose units pass `systemd-analyze verify`
and whose daemon serves a session with the shipped config.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -q \
    tests/integration/test_systemd.py
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from clientlib import run
from remotemedia.remote import RemoteProxyClient
from serverlib import BUILD, ROOT, wait_for

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")
ACTIVATE = shutil.which("systemd-socket-activate")
ANALYZE = shutil.which("systemd-analyze")


class Probe:
    def ping(self):
        return "pong"

    def environ(self):
        import os as o
        return sorted(k for k in o.environ if k.startswith(("NOTIFY", "LISTEN", "WATCHDOG")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Notify:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []

    def wait(self, line: str, timeout: float = 10.0) -> None:
        """Read until some message has this line; bounded by timeout."""
        deadline = time.monotonic() + timeout
        while not any(line in m.split("\n") for m in self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {line!r} in {self.messages}")
            self.sock.settimeout(left)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def count(self, line: str) -> int:
        return sum(line in m.split("\n") for m in self.messages)

    def close(self) -> None:
        self.sock.close()


def test_notify_ready_status_watchdog_and_stopping(fresh_server, tmp_path):
    notify = Notify(tmp_path)
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="200000")
    try:
        srv = fresh_server(["--session-pool", "0"], env=env)
        notify.wait("READY=1")
        ready = next(m for m in notify.messages if "READY=1" in m.split("\n"))
        assert f"MAINPID={srv.proc.pid}" in ready.split("\n")
        notify.wait("STATUS=serving: 0 sessions")
        # The watchdog: every WATCHDOG_USEC / 2, from the event loop.
        start = notify.count("WATCHDOG=1")
        notify.wait("WATCHDOG=1")
        deadline = time.monotonic() + 3
        while notify.count("WATCHDOG=1") < start + 5 and time.monotonic() < deadline:
            notify.sock.settimeout(0.5)
            try:
                notify.messages.append(notify.sock.recv(4096).decode())
            except socket.timeout:
                pass
        assert notify.count("WATCHDOG=1") >= start + 5

        async def session():
            async with RemoteProxyClient(srv.config()) as client:
                p = await client.create_proxy(Probe())
                await asyncio.get_running_loop().run_in_executor(
                    None, notify.wait, "STATUS=serving: 1 session")
                return await p.environ()
        # Sessions see none of the variables systemd gave the daemon.
        assert run(session()) == []
        srv.proc.send_signal(signal.SIGTERM)
        notify.wait("STOPPING=1")
        assert srv.proc.wait(timeout=20) == 0
    finally:
        notify.close()


def test_a_watchdog_meant_for_another_process_is_ignored(fresh_server, tmp_path):
    notify = Notify(tmp_path)
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="100000",
               WATCHDOG_PID="1")
    try:
        fresh_server(["--session-pool", "0"], env=env)
        notify.wait("READY=1")
        time.sleep(0.5)
        notify.sock.setblocking(False)
        while True:
            try:
                notify.messages.append(notify.sock.recv(4096).decode())
            except BlockingIOError:
                break
        assert notify.count("WATCHDOG=1") == 0
    finally:
        notify.close()


def test_a_notify_socket_that_is_gone_does_not_stop_the_daemon(fresh_server, tmp_path):
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "absent"), WATCHDOG_USEC="100000")
    srv = fresh_server(["--session-pool", "0"], env=env)

    async def main():
        async with RemoteProxyClient(srv.config()) as client:
            return await (await client.create_proxy(Probe())).ping()
    assert run(main()) == "pong"
    time.sleep(0.3)
    assert srv.proc.poll() is None
    assert srv.log_text().count("notify ") == 1  # warned once, not per tick


def _activated(args: list[str], state: str, port: int, env=None) -> subprocess.Popen:
    log = open(state + ".log", "w+b")
    # systemd-socket-activate passes on only the variables named with -E.
    keep = ["-E", "NOTIFY_SOCKET"] if env and "NOTIFY_SOCKET" in env else []
    return subprocess.Popen(
        [ACTIVATE, "-l", f"127.0.0.1:{port}", *keep, *args, "--state-dir", state,
         "--log-level", "debug"], stdout=log, stderr=log, env=env)


def ping_activated(state: str, port: int) -> str:
    """Once systemd-socket-activate listens, a session through its socket."""
    wait_for(lambda: "Listening on" in Path(state + ".log").read_text(errors="replace"),
             10, "systemd-socket-activate to listen")

    async def main():
        from remotemedia.core.node import RemoteExecutorConfig
        cfg = RemoteExecutorConfig(host="127.0.0.1", port=port, timeout=30.0)
        async with RemoteProxyClient(cfg) as client:
            return await (await client.create_proxy(Probe())).ping()
    return run(main())


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed")
def test_socket_activation_serves_on_the_passed_socket():
    state = tempfile.mkdtemp(prefix="rm-act-")
    port = free_port()
    conf = state + ".conf"
    Path(conf).write_text("listen = 127.0.0.1:1\n")
    # listen names another port: the passed socket wins.
    proc = _activated([str(BUILD / "remotemediad"), "--config", conf], state, port)
    try:
        assert ping_activated(state, port) == "pong"
        log = Path(state + ".log").read_text(errors="replace")
        assert f"listening on 127.0.0.1:{port} (socket activation)" in log, log[-3000:]
        # Nor would a restart apply a changed listen: SIGHUP does not say it would.
        Path(conf).write_text("listen = 127.0.0.1:2\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: reloading" in Path(state + ".log").read_text(), 10,
                 "the SIGHUP")
        time.sleep(0.2)
        assert "takes effect only" not in Path(state + ".log").read_text()
    finally:
        os.unlink(conf)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
        shutil.rmtree(state, ignore_errors=True)
        os.unlink(state + ".log")
    assert rc == 0


@pytest.mark.parametrize("setup,words", [
    ("exec 3</dev/null; LISTEN_FDS=1", "fd 3 is not a stream socket"),
    ("LISTEN_FDS=2", "2 sockets passed"),
])
def test_socket_activation_refuses_what_it_cannot_serve(tmp_path, setup, words):
    cmd = f'{setup} LISTEN_PID=$$ exec "$0" --state-dir "$1" --listen 127.0.0.1:0'
    r = subprocess.run(["sh", "-c", cmd, str(BUILD / "remotemediad"), str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and words in r.stderr, r.stderr


def test_socket_activation_variables_of_another_process_are_ignored(fresh_server):
    env = dict(os.environ, LISTEN_PID="1", LISTEN_FDS="1")
    srv = fresh_server(["--session-pool", "0"], env=env)
    assert "socket activation" not in srv.log_text()

    async def main():
        async with RemoteProxyClient(srv.config()) as client:
            return await (await client.create_proxy(Probe())).ping()
    assert run(main()) == "pong"


# ---------------------------------------------------------------------------
# make install, as an operator


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if BUILD != (ROOT / "build").resolve():
        pytest.skip("make install is checked against the default build only")
    dest = tmp_path_factory.mktemp("destdir")
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"DESTDIR={dest}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def test_make_install_puts_every_file_in_destdir(installed):
    for path in ("usr/local/bin/remotemediad", "usr/local/bin/remotemedia-worker",
                 "usr/local/bin/rmctl", "usr/local/share/man/man8/remotemediad.8",
                 "usr/local/share/man/man1/rmctl.1",
                 "etc/systemd/system/remotemediad.service",
                 "etc/systemd/system/remotemediad.socket",
                 "etc/remotemedia/remotemediad.conf"):
        assert (installed / path).is_file(), path
    assert os.access(installed / "usr/local/bin/remotemediad", os.X_OK)
    unit = (installed / "etc/systemd/system/remotemediad.service").read_text()
    assert "ExecStart=/usr/local/bin/remotemediad\n" in unit


def test_make_install_keeps_an_operators_config(installed):
    conf = installed / "etc/remotemedia/remotemediad.conf"
    original = conf.read_text()
    conf.write_text("max-sessions = 7\n")
    try:
        r = subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"DESTDIR={installed}"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert conf.read_text() == "max-sessions = 7\n"
    finally:
        conf.write_text(original)


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_the_installed_units_pass_systemd_analyze_verify(installed, tmp_path):
    # verify checks that ExecStart exists: point it into DESTDIR.
    bindir = installed / "usr/local/bin"
    for unit in ("remotemediad.service", "remotemediad.socket"):
        text = (installed / "etc/systemd/system" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/usr/local/bin/", f"{bindir}/"))
    env = dict(os.environ, MANPATH=str(installed / "usr/local/share/man"))
    r = subprocess.run([ANALYZE, "verify", str(tmp_path / "remotemediad.service"),
                        str(tmp_path / "remotemediad.socket")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


@ROOT_ONLY
@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed")
def test_the_installed_daemon_serves_with_the_shipped_config(installed, tmp_path):
    """As a new operator would: the installed daemon under
    systemd-socket-activate with the shipped config (metrics on, a token
    file), every rmctl command, the metrics scraped, the Node example."""
    import http.client
    import json
    daemon = installed / "usr/local/bin/remotemediad"
    rmctl = str(installed / "usr/local/bin/rmctl")
    conf = tmp_path / "remotemediad.conf"
    tokens = tmp_path / "tokens"
    tokens.write_text("ops:ops-token-0123456789abcdef:admin\n")
    tokens.chmod(0o600)
    metrics = free_port()
    # The shipped file, with two of its keys turned on.
    conf.write_text((installed / "etc/remotemedia/remotemediad.conf").read_text()
                    + f"metrics-listen = 127.0.0.1:{metrics}\ntoken-file = {tokens}\n")
    r = subprocess.run([str(daemon), "--check-config", "--config", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
    state = str(tmp_path / "state")
    port = free_port()
    notify = Notify(tmp_path)
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, REMOTEMEDIA_TOKEN="ops-token-0123456789abcdef")
    # The unit's UMask, as systemd would set it: the sandbox's directories
    # must still be entered by the sessions' uids.
    unit = (installed / "etc/systemd/system/remotemediad.service").read_text()
    umask = re.search(r"^UMask=(\d+)$", unit, re.M)
    old_umask = os.umask(int(umask.group(1), 8) if umask else 0o022)
    try:
        proc = _activated([str(daemon), "--config", str(conf)], state, port, env=env)
    finally:
        os.umask(old_umask)
    at = ["--port", str(port)]

    def ctl(*args):
        return subprocess.run([rmctl, *args], capture_output=True, text=True, timeout=120,
                              env=env)
    try:
        wait_for(lambda: "Listening on" in Path(state + ".log").read_text(errors="replace"),
                 10, "systemd-socket-activate to listen")
        r = ctl("health", *at)  # the first connection activates the daemon
        assert r.returncode == 0 and r.stdout.strip() == "SERVING", r.stderr
        notify.wait("READY=1")
        r = ctl("info", *at, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["limits"]["max-sessions"] == "1000"
        assert ctl("echo", *at, "--message", "hi").stdout.strip() == "hi"
        src = tmp_path / "ops.py"
        src.write_text("class Ops:\n    def twice(self, x):\n        return 2 * x\n")
        r = ctl("run", *at, "--source", str(src), "--class", "Ops", "--call", "twice",
                "--args", "[21]")
        assert r.returncode == 0 and r.stdout.strip() == "42", r.stderr
        r = ctl("sessions", *at)
        assert r.returncode == 0 and r.stdout.startswith("SESSION"), r.stderr
        r = ctl("kill", "0" * 32, *at)
        assert r.returncode == 5, r.stderr  # NOT_FOUND
        r = ctl("bench", *at, "--count", "20", "--sessions", "2", "--items", "2",
                "--item-size", "1K", "--parallel", "1", "--duration", "200ms",
                "--pace", "10ms", "--json")
        assert r.returncode == 0, r.stderr
        c = http.client.HTTPConnection("127.0.0.1", metrics, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        assert re.search(r"^remotemedia_calls_total [1-9]", text, re.M), text[:2000]
        node = shutil.which("node")
        modules = BUILD / "node-example" / "node_modules"
        if node is not None and modules.is_dir():  # test_node_example installs it
            r = subprocess.run([node, str(ROOT / "examples/node/client.js"), *at],
                               capture_output=True, text=True, timeout=120,
                               env=dict(env, NODE_PATH=str(modules)))
            assert r.returncode == 0 and r.stdout.splitlines()[-1] == "closed", r.stderr
        log = Path(state + ".log").read_text(errors="replace")
        # The worker beside the installed daemon, not the build tree's.
        assert str(BUILD) not in log, log[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
        notify.close()
    assert rc == 0
