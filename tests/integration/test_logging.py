"""The daemon's log: logfmt key=value lines on stderr (journald keeps them
as they are), each with ts, level and proc; lines about a session carry
session=ID; whatever a session writes is one quoted value of a line of its
own and can never pass for a line of the front.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -q \
    tests/integration/test_logging.py
"""
from __future__ import annotations

import asyncio
import re
import socket

from remotemedia.remote import RemoteProxyClient
from serverlib import SERVER_ARGS

# make sanitize-test runs every server with --sandbox off: no relay then.
SANDBOX_OFF = "--sandbox" in SERVER_ARGS and \
    SERVER_ARGS[SERVER_ARGS.index("--sandbox") + 1] == "off"

PAIR = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)')


def logfmt(line: str) -> dict[str, str]:
    """One logfmt line as a dict; AssertionError if it is not one."""
    out, pos = {}, 0
    while pos < len(line):
        m = PAIR.match(line, pos)
        assert m, f"not logfmt at column {pos}: {line!r}"
        value = m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        assert m.group(1) not in out, f"key {m.group(1)} twice: {line!r}"
        out[m.group(1)] = value
        pos = m.end()
    return out


FORGED = 'ts=2026-01-01T00:00:00.000Z level=error proc=front msg="forged"'


class Noisy:
    def forge(self):
        import os
        import sys
        print("to stdout")
        sys.stderr.write("to stderr\n")
        os.write(2, b'ts=2026-01-01T00:00:00.000Z level=error proc=front msg="forged"\n')
        return "done"


def test_every_line_is_logfmt_with_its_session(fresh_server):
    srv = fresh_server(["--session-pool", "0"])

    async def main():
        async with RemoteProxyClient(srv.config()) as client:
            p = await client.create_proxy(Noisy())
            assert await p.forge() == "done"
            return p._rm_session.session_id
    sid = asyncio.run(asyncio.wait_for(main(), 60))
    srv.stop()
    lines = srv.log_text().splitlines()
    assert lines
    records = [logfmt(line) for line in lines]
    for r in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["ts"]), r
        assert r["level"] in ("error", "warn", "info", "debug"), r
        assert r["proc"] in ("front", "worker", "worker-init", "worker-relay",
                              "builder", "session"), r
        assert "msg" in r or "line" in r, r
    front = [r for r in records if r["proc"] == "front"]
    assert any(r.get("msg", "").startswith("listening on 127.0.0.1:") for r in front)
    # Front lines about the session name it.
    about = [r for r in front if f"session {sid}" in r["msg"]]
    assert about and all(r.get("session") == sid for r in about), [r for r in about if r.get("session") != sid]
    # The worker's own lines, relayed: quoted whole, under the session.
    relayed = [r for r in records if r["proc"] == "session"]
    if SANDBOX_OFF:  # no sandbox, no relay: the worker logs itself
        assert relayed == []
        assert all(r["session"] == sid for r in records if r["proc"] == "worker")
    else:
        assert relayed and all(r["session"] == sid for r in relayed)
        inner = [logfmt(r["line"]) for r in relayed if r["line"].startswith("ts=")]
        assert inner and all(i["session"] == sid and i["proc"] in ("worker", "worker-init")
                             for i in inner)
    # What the object wrote to fd 2 is inside a line= value, never a line.
    assert FORGED not in lines
    assert not any(line.startswith(FORGED[:40]) for line in lines)


def test_the_worker_log_never_reaches_the_session_stream(fresh_server):
    """The worker moves its log off fd 2 (which becomes the capture pipe of
    what user code prints): a log line written to fd 2 would reach the
    front as Output, and a spare that speaks before its Open is killed."""
    srv = fresh_server(["--session-pool", "1"])

    async def main():
        async with RemoteProxyClient(srv.config()) as client:
            await asyncio.sleep(0.5)  # the spare is up, and has logged
            p = await client.create_proxy(Noisy())
            return await p.forge()
    assert asyncio.run(asyncio.wait_for(main(), 60)) == "done"
    log = srv.log_text()
    assert "front_pool_adopt: session" in log  # the session took the spare
    assert "spoke before its Open" not in log and "ended unused" not in log


def test_log_level_warn_holds_for_what_sessions_log(fresh_server):
    """--log-level warn: no info line, not even the relayed lines of a
    session (its worker's, slirp4netns's chatter on each start)."""
    with socket.socket() as s:  # a free port: the log will not say it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = fresh_server(["--listen", f"127.0.0.1:{port}", "--log-level", "warn",
                        "--session-pool", "1"])

    async def main():
        async with RemoteProxyClient(srv.config()) as client:
            p = await client.create_proxy(Noisy())   # takes the spare
            q = await client.create_proxy(Noisy())   # a worker of its own
            return [await p.forge(), await q.forge()]
    assert asyncio.run(asyncio.wait_for(main(), 60)) == ["done", "done"]
    srv.stop()
    records = [logfmt(line) for line in srv.log_text().splitlines()]
    assert [r for r in records if r["level"] not in ("error", "warn")] == []
