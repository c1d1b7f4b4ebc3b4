"""Fixtures the suites share; a suite's conftest.py imports those it uses.

  front        a factory of started fake fronts (workerlib), each driving a
               real worker, stopped at the end of the test. It makes them
               with front_maker, FakeFront unless a module overrides that
               fixture (test_sandbox_direct.py: sandboxed ones).
  listener     a TCP listener on the host's 127.0.0.1; its port.

tcp_listener(address) is the listening socket itself, for fixtures of
other addresses.
"""
from __future__ import annotations

import contextlib
import socket
from typing import Iterator

import pytest


@pytest.fixture
def front_maker():
    """What front() calls with (session dir, **keywords): an unstarted front."""
    from workerlib import FakeFront
    return FakeFront


@pytest.fixture
def front(tmp_path, front_maker):
    """A factory of started fake fronts, stopped at the end of the test:
    front(name="session", **keywords of front_maker)."""
    made = []

    def make(name="session", **kw):
        f = front_maker(tmp_path / name, **kw).start()
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


@contextlib.contextmanager
def tcp_listener(address: str = "127.0.0.1") -> Iterator[socket.socket]:
    """A TCP socket listening on address, on a free port; closed after."""
    s = socket.socket()
    try:
        s.bind((address, 0))
        s.listen(8)
        yield s
    finally:
        s.close()


@pytest.fixture
def listener():
    """A TCP listener on the host's 127.0.0.1; its port."""
    with tcp_listener() as s:
        yield s.getsockname()[1]
