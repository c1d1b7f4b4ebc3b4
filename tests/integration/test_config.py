"""The daemon's options as an operator meets them: --help, the man page and
the shipped example config name the same options; --config FILE sets
them, flags override it, and errors name the file and line;
--check-config validates and exits.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -q \
    tests/integration/test_config.py
"""
from __future__ import annotations

import asyncio
import re
import subprocess

import pytest

from remotemedia.core.exceptions import RemoteMediaError
from remotemedia.remote import RemoteProxyClient
from serverlib import BUILD, ROOT
from targets import Ping

DAEMON = str(BUILD / "remotemediad")
EXAMPLE = ROOT / "systemd" / "remotemediad.conf"


def daemon(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run([DAEMON, *args], capture_output=True, text=True,
                          timeout=timeout)


def help_options() -> list[str]:
    text = daemon("--help").stderr
    return re.findall(r"^  --([a-z0-9-]+)", text, re.M)


def test_help_man_page_and_example_config_name_every_option():
    names = help_options()
    assert len(names) > 40 and "max-streams" in names and "config" in names
    man = daemon("--man")
    assert man.returncode == 0
    man_names = set(re.findall(r'^\.BI? "?\\-\\-([a-z0-9\\-]+)', man.stdout, re.M))
    man_names = {n.replace("\\-", "-") for n in man_names}
    example = EXAMPLE.read_text()
    for name in names:
        assert name in man_names, f"--{name} is not in the man page"
        if name not in ("config", "check-config", "help", "man"):
            assert re.search(rf"^#{re.escape(name)} = ", example, re.M), \
                f"{name} is not in {EXAMPLE.name}"


# Options whose example line shows an example, not the default: the
# default is none, or a path made from another option.
EXAMPLE_NOT_DEFAULT = {"metrics-listen", "env-cache-dir", "worker", "config"}


def test_the_example_config_shows_the_defaults():
    """Each commented line of the example config holds the value that
    --help gives as the option's default, so that uncommenting it changes
    nothing (a default changed in one place only is caught here), but for
    the options named in EXAMPLE_NOT_DEFAULT."""
    text = daemon("--help").stderr
    blocks = re.split(r"^  --", text, flags=re.M)[1:]
    defaults = {}
    for block in blocks:
        m = re.search(r"\(default:? ([^()]*?)\)", " ".join(block.split()))
        if m:
            defaults[block.split()[0]] = m.group(1)
    assert defaults.get("session-busy-poll") == "400", defaults
    example = dict(re.findall(r"^#([a-z0-9-]+) = (.*)$", EXAMPLE.read_text(), re.M))
    checked = set()
    for name, default in defaults.items():
        if name in EXAMPLE_NOT_DEFAULT:
            continue
        assert example.get(name) == default, \
            f"{name}: the example says {example.get(name)!r}, --help {default!r}"
        checked.add(name)
    # Every option with a default but those few: the switches, the
    # listener, the uid range and the levels as well as the numbers.
    assert {"sandbox", "listen", "session-uids", "log-level",
            "session-network", "busy-poll"} <= checked, checked
    assert len(checked) + len(EXAMPLE_NOT_DEFAULT & set(defaults)) == len(defaults)


def test_man_page_renders_without_warnings():
    groff = subprocess.run(["which", "groff"], capture_output=True, text=True)
    if groff.returncode != 0:
        pytest.skip("groff is not installed")
    page = daemon("--man").stdout
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=page,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_the_example_config_checks_clean():
    r = daemon("--check-config", "--config", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout


@pytest.mark.parametrize("text,line,words", [
    ("listen = 127.0.0.1:1\nsession-cpu = 6401\n", 2, ["--session-cpu", "'6401'"]),
    ("# fine\n\nbogus-key = 1\n", 3, ["bogus-key", "unknown key"]),
    ("state-dir = relative/dir\n", 1, ["--state-dir", "absolute"]),
    ("pip-timeout\n", 1, ["pip-timeout", "missing value"]),
    ("config = /etc/passwd\n", 1, ["config", "unknown key"]),
])
def test_a_bad_config_line_is_named_by_file_and_line(tmp_path, text, line, words):
    conf = tmp_path / "rm.conf"
    conf.write_text(text)
    for args in (["--check-config", "--config", str(conf)],
                 ["--config", str(conf), "--listen", "127.0.0.1:0",
                  "--state-dir", str(tmp_path / "state")]):
        r = daemon(*args)
        assert r.returncode == 2, (args, r.stderr)
        first = r.stderr.splitlines()[0]
        assert first.startswith(f"remotemediad: {conf}:{line}: "), first
        for w in words:
            assert w in first, first
        assert "listening on" not in r.stderr


def test_a_missing_or_unreadable_config_file_is_an_error(tmp_path):
    r = daemon("--check-config", "--config", str(tmp_path / "absent.conf"))
    assert r.returncode == 2
    assert "absent.conf: No such file or directory" in r.stderr
    r = daemon("--check-config", "--config", str(tmp_path))  # a directory
    assert r.returncode == 2 and str(tmp_path) in r.stderr


def test_check_config_runs_the_start_up_checks(tmp_path):
    # A non-loopback address without a token file: the daemon refuses to
    # start, so the check must say so too, and not print OK.
    conf = tmp_path / "rm.conf"
    conf.write_text("listen = 0.0.0.0:50999\n")
    r = daemon("--check-config", "--config", str(conf))
    assert r.returncode == 2 and "configuration OK" not in r.stdout
    assert "token" in r.stderr, r.stderr
    # A TLS certificate that does not load.
    r = daemon("--check-config", "--tls-cert", str(tmp_path / "no.pem"),
               "--tls-key", str(tmp_path / "no.key"))
    assert r.returncode == 2 and "configuration OK" not in r.stdout
    # A worker binary that is not there.
    r = daemon("--check-config", "--worker", str(tmp_path / "no-worker"))
    assert r.returncode == 2 and "no-worker" in r.stderr
    # A --metrics-listen name that does not resolve.
    r = daemon("--check-config", "--config", "/dev/null",
               "--metrics-listen", "no-such-host.invalid:9100")
    assert r.returncode == 2 and "configuration OK" not in r.stdout
    assert "--metrics-listen no-such-host.invalid" in r.stderr, r.stderr


def test_sighup_reloads_the_limits(tmp_path, fresh_server):
    """Limits and session limits are read again on SIGHUP (a flag still
    wins over the file); spares made under the old session limits are
    replaced; a file that does not parse keeps the limits in force."""
    import signal
    import time
    conf = tmp_path / "rm.conf"
    conf.write_text("max-sessions = 1\nmax-inflight-calls = 7\n")
    srv = fresh_server(["--config", str(conf), "--session-pool", "1",
                        "--max-inflight-calls", "9"])

    def hup(until: str) -> None:
        n = srv.log_text().count(until)
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while srv.log_text().count(until) == n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.log_text().count(until) > n, srv.log_text()[-3000:]

    async def sessions(n: int) -> str:
        """Open n sessions at once; the refusal's message, or ""."""
        async with RemoteProxyClient(srv.config(timeout=20.0, max_retries=0)) as client:
            held = []  # a proxy no longer referred to closes its session
            try:
                for _ in range(n):
                    held.append(await client.create_proxy(Ping()))
                    assert await held[-1].ping() == "pong"
            except RemoteMediaError as exc:
                return str(exc)
            finally:
                for p in held:
                    await client.close_proxy(p)
            return ""

    assert "--max-sessions" in asyncio.run(sessions(2))
    conf.write_text("max-sessions = 2\nsession-memory = 512M\nmax-inflight-calls = 5\n")
    hup("session limits changed")
    log = srv.log_text()
    assert "SIGHUP: --max-sessions 2 (was 1)" in log
    assert "SIGHUP: --session-memory 512M (was 1G)" in log
    assert "--max-inflight-calls" not in log.split("SIGHUP: reloading")[-1]  # the flag's
    srv.wait_idle(20)
    assert asyncio.run(sessions(2)) == ""
    conf.write_text("max-sessions = 0\n")
    hup("limits not reloaded")
    srv.wait_idle(20)
    assert "--max-sessions" in asyncio.run(sessions(3))
    srv.wait_idle(20)
    assert asyncio.run(sessions(2)) == ""


def test_sighup_replaces_spares_that_hold_an_old_value_limit(tmp_path, fresh_server):
    """A spare gets --max-value-size (which its worker enforces, and its
    Ready reports) when it starts: a new value on SIGHUP replaces it, as
    a new session limit does."""
    import signal
    import time

    import grpc
    from h2raw import H2Client, open_session, split_grpc
    from remotemedia._proto import remotemedia_pb2 as pb
    conf = tmp_path / "rm.conf"
    conf.write_text("max-value-size = 2M\nmax-streams = 50\n")
    srv = fresh_server(["--config", str(conf), "--session-pool", "1", "--sandbox", "off"])
    ch = grpc.insecure_channel(f"{srv.host}:{srv.port}")
    info = ch.unary_unary("/remotemedia.v1.Admin/Info",
                          request_serializer=pb.InfoRequest.SerializeToString,
                          response_deserializer=pb.InfoReply.FromString)

    def spare_ready() -> None:
        deadline = time.monotonic() + 10
        while info(pb.InfoRequest(), timeout=10).spares < 1:
            assert time.monotonic() < deadline, "no spare"
            time.sleep(0.05)
        time.sleep(0.5)  # its start-up done

    def max_value() -> tuple[int, int]:
        c = H2Client(srv.host, srv.port, timeout=30)
        try:
            sid = open_session(c, Ping())
            lim = pb.ServerMessage.FromString(split_grpc(c.responses[sid].data)[-1]).ready.limits
            return lim.max_value_bytes, lim.max_streams
        finally:
            c.close()

    def reload(text: str) -> None:
        """Write the file and SIGHUP; return once the spares were retired."""
        spare_ready()  # the next one, made under the old values
        conf.write_text(text)
        n = srv.log_text().count("session limits changed")
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while srv.log_text().count("session limits changed") == n:
            assert time.monotonic() < deadline, srv.log_text()[-3000:]
            time.sleep(0.05)
        spare_ready()

    try:
        spare_ready()
        assert max_value() == (2 << 20, 50)
        reload("max-value-size = 2M\nmax-streams = 60\n")
        assert max_value() == (2 << 20, 60)
        reload("max-value-size = 3M\nmax-streams = 60\n")
        assert max_value() == (3 << 20, 60)
    finally:
        ch.close()


def test_sighup_says_which_changed_options_wait_for_a_restart(tmp_path, fresh_server):
    """An option a SIGHUP cannot apply (--seccomp-log, --listen) is named in
    the log when the file changes it, and only then: a SIGHUP with nothing
    changed says nothing of the kind, though the server set some values
    itself at start (the environment cache's directory). (Not --sandbox:
    the sanitizer suite gives --sandbox off as a flag, which wins.)"""
    import signal
    import time
    conf = tmp_path / "rm.conf"
    # A list longer than a log line: a change at its end counts too.
    egress = "".join(f"session-egress-allow = 2001:db8:{i}:ffff:ffff:ffff::/96\n"
                     for i in range(16))
    conf.write_text("sandbox = off\nseccomp-log = off\nmax-sessions = 50\n" + egress)
    srv = fresh_server(["--config", str(conf)])

    def hup(expect: str) -> str:
        n = srv.log_text().count("SIGHUP: reloading")
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while expect not in srv.log_text() or \
                srv.log_text().count("SIGHUP: reloading") == n:
            assert time.monotonic() < deadline, srv.log_text()[-2000:]
            time.sleep(0.05)
        return srv.log_text()

    log = hup("SIGHUP: reloading")
    assert "takes effect only when the server restarts" not in log, log[-2000:]
    conf.write_text("sandbox = off\nseccomp-log = on\nmax-sessions = 60\n" + egress)
    log = hup("--max-sessions 60 (was 50)")
    assert "SIGHUP: --seccomp-log on (was off) takes effect only when the server restarts" \
        in log
    assert log.count("takes effect only when the server restarts") == 1, log[-2000:]
    conf.write_text("sandbox = off\nseccomp-log = on\nmax-sessions = 60\n" +
                    egress.replace("2001:db8:15:ffff:ffff:ffff::/96", "10.9.9.0/24"))
    hup("SIGHUP: --session-egress-allow")  # named, though its start is as before


def test_a_server_takes_its_options_from_the_file_and_flags_win(tmp_path, fresh_server):
    conf = tmp_path / "rm.conf"
    # serverlib passes --log-level debug on the command line: it must win.
    conf.write_text("log-level = error\nmax-sessions = 1\nsession-pool = 0\n")
    srv = fresh_server(["--config", str(conf)])

    async def main():
        async with RemoteProxyClient(srv.config(timeout=20.0)) as client:
            p = await client.create_proxy(Ping())
            assert await p.ping() == "pong"
            with pytest.raises(RemoteMediaError) as info:
                await client.create_proxy(Ping())
            return str(info.value)
    message = asyncio.run(asyncio.wait_for(main(), 60))
    assert "--max-sessions" in message
    assert "level=debug" in srv.log_text()  # the flag's level, not the file's
    assert "pool_start" not in srv.log_text()

