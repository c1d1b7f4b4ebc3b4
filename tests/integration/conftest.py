"""Fixtures for the integration suite: the real remotemediad on a free
loopback port with a temporary state directory, driven by the real client;
and, from tests/lib/fixtures.py, fake fronts driving a real worker and a
host listener."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "python"))
sys.path.insert(0, str(HERE.parent / "lib"))

from fixtures import front, front_maker, listener  # noqa: E402,F401
from serverlib import ROOT, Server, Unprivileged  # noqa: E402


@pytest.fixture(scope="session")
def server():
    srv = Server()
    yield srv
    rc = srv.stop()
    log = srv.log_text()
    srv.cleanup()
    assert rc == 0, log[-4000:]


@pytest.fixture
def fresh_server():
    """A server of the test's own, for tests that stop or break it."""
    servers: list[Server] = []

    def start(extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> Server:
        srv = Server(extra_args, env=env)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()
        srv.cleanup()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A throwaway CA and certificates (scripts/gen-test-certs)."""
    import subprocess
    d = tmp_path_factory.mktemp("certs")
    subprocess.run([str(ROOT / "scripts" / "gen-test-certs"), str(d)], check=True,
                   capture_output=True, timeout=60)
    return d


@pytest.fixture
def unprivileged():
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv missing")
    u = Unprivileged()
    yield u
    u.cleanup()
