"""Fixtures for the escape suite: real remotemediad servers (sandbox on, as
root) and sessions on them (tests/lib/clientlib.py's Session), driven by
the real client from one event loop that runs in a thread of its own
(clientlib's Loop), so that sessions can live across tests (the neighbour)
while each test stays a plain function. The host listener comes from
tests/lib/fixtures.py.

Servers, by what the tests need (each started once per module):
  limited   --session-memory 128M --session-pids 32 --session-disk 16M,
            network isolated: the destructive cases, with a neighbour
            session that must stay unharmed;
  others    started by the tests that need other flags (network off or
            host, --seccomp-log on).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "python"))
sys.path.insert(0, str(HERE.parent / "lib"))

from clientlib import Loop  # noqa: E402
from fixtures import listener  # noqa: E402,F401
from serverlib import BUILD, Server  # noqa: E402

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the sandbox needs root")
needs_build = pytest.mark.skipif(not (BUILD / "remotemediad").exists(),
                                 reason="run make first")

LIMITED = ["--session-memory", "128M", "--session-pids", "32",
           "--session-disk", "16M"]


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE not in Path(str(item.fspath)).parents:
            continue
        item.add_marker(needs_root)
        item.add_marker(needs_build)


@pytest.fixture(scope="session")
def loop():
    lp = Loop()
    yield lp
    lp.close()


class Servers:
    """Servers of one module, stopped at its end; asserts that none of them
    crashed (exit status 0 after SIGTERM, no error lines)."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def start(self, extra_args=None, wrapper=None) -> Server:
        if wrapper is None:
            srv = Server(extra_args)
        else:
            srv = _wrapped_server(extra_args, wrapper)
        self.started.append(srv)
        return srv

    def stop_all(self) -> list[str]:
        problems = []
        for srv in self.started:
            alive = srv.proc.poll() is None
            rc = srv.stop()
            log = srv.log_text()
            if not alive or rc != 0:
                problems.append(f"server exited {rc}: {log[-3000:]}")
            srv.cleanup()
        return problems


def _wrapped_server(extra_args, wrapper) -> Server:
    """A Server whose remotemediad runs under wrapper (argv prefix), e.g.
    in a private mount namespace of the test's own."""
    import serverlib

    class Shim:
        """serverlib's view of subprocess while the server starts."""

        def __getattr__(self, name):
            return getattr(subprocess, name)

        @staticmethod
        def Popen(args, **kw):
            return subprocess.Popen(list(wrapper) + list(args), **kw)
    serverlib.subprocess = Shim()
    try:
        return Server(extra_args)
    finally:
        serverlib.subprocess = subprocess


@pytest.fixture(scope="module")
def servers():
    s = Servers()
    yield s
    problems = s.stop_all()
    assert not problems, problems


@pytest.fixture(scope="module")
def limited(servers):
    """The server of the destructive cases."""
    return servers.start(LIMITED)
