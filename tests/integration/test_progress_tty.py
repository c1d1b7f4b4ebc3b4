"""Without a progress callback, an install shows a progress bar on stderr
when stderr is a terminal (a pty here), and nothing of the sort otherwise."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap
import time

import pytest

from pkgindex import PackageIndex, build_test_packages
from serverlib import ROOT

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {python!r})
    from remotemedia.core.node import RemoteExecutorConfig
    from remotemedia.remote import RemoteProxyClient
    class App:
        def hello(self):
            import rmtest_app
            return rmtest_app.hello()
    async def main():
        cfg = RemoteExecutorConfig(host="127.0.0.1", port={port}, pip_packages=["rmtest-app"])
        async with RemoteProxyClient(cfg) as c:
            p = await c.create_proxy(App())
            print("RESULT", await p.hello(), flush=True)
    asyncio.run(main())
""")


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    wheels = build_test_packages(tmp_path_factory.mktemp("wheels"))
    with PackageIndex([w for ws in wheels.values() for w in ws]) as idx:
        yield idx


def run_client(port: int, tty: bool) -> tuple[str, str]:
    script = SCRIPT.format(python=str(ROOT / "python"), port=port)
    if not tty:
        p = subprocess.run([sys.executable, "-c", script], capture_output=True,
                           text=True, timeout=60)
        return p.stdout, p.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    err = b""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                err += os.read(master, 4096)
            except OSError:
                break
    out = proc.communicate(timeout=30)[0].decode()
    os.close(master)
    return out, err.decode(errors="replace")


def test_progress_bar_on_a_terminal(fresh_server, index):
    srv = fresh_server(["--pip-index-url", index.url])
    out, err = run_client(srv.port, tty=True)
    assert "RESULT app 2.0" in out
    assert "remotemedia: installing [" in err
    assert "#" in err


def test_no_progress_bar_without_a_terminal(fresh_server, index):
    srv = fresh_server(["--pip-index-url", index.url])
    out, err = run_client(srv.port, tty=False)
    assert "RESULT app 2.0" in out
    assert "installing [" not in err
