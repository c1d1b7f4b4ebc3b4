"""examples/node: a Node.js client (@grpc/grpc-js and the project's .proto)
opens a json-format session from Python source, calls methods, streams a
generator and handles a remote exception, against a real server; with a
token file, it authenticates with REMOTEMEDIA_TOKEN.

The example's dependencies are installed once with `npm ci` (the committed
package-lock.json) into build/node-example/.

Run: PYTHONPATH=python /usr/bin/python3 -m pytest -q \
    tests/integration/test_node_example.py
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from serverlib import BUILD, ROOT

EXAMPLE = ROOT / "examples" / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(NODE is None or NPM is None,
                                reason="node and npm are not installed (scripts/install-deps)")


@pytest.fixture(scope="module")
def node_modules() -> str:
    """npm ci into build/node-example once per lock file."""
    dest = BUILD / "node-example"
    lock = (EXAMPLE / "package-lock.json").read_bytes()
    stamp = dest / "installed-lock.json"
    if not (stamp.exists() and stamp.read_bytes() == lock):
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(EXAMPLE / name, dest / name)
        r = subprocess.run([NPM, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                           cwd=dest, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        stamp.write_bytes(lock)
    return str(dest / "node_modules")


def run_example(node_modules: str, port: int, env: dict | None = None):
    e = {k: v for k, v in os.environ.items() if k != "REMOTEMEDIA_TOKEN"}
    e["NODE_PATH"] = node_modules
    e.update(env or {})
    return subprocess.run([NODE, str(EXAMPLE / "client.js"), "--port", str(port)],
                          capture_output=True, text=True, timeout=120, env=e)


EXPECTED = [
    "add(5) -> 15",
    "add(x=2.5) -> 17.5",
    'describe() -> {"total":17.5,"kind":"float"}',
    'countdown(3) -> [{"left":3},{"left":2},{"left":1}]',
    "divide(0) raised ZeroDivisionError: float division by zero",
    "add(1) after the error -> 18.5",
    "closed",
]


def test_the_node_example_runs_end_to_end(node_modules, server):
    r = run_example(node_modules, server.port)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("session ") and lines[0].endswith("ready, python 3.11")
    assert lines[1:] == EXPECTED


def test_the_node_example_authenticates_with_a_token(node_modules, fresh_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("node:node-token-0123456789abcdef\n")
    tokens.chmod(0o600)
    srv = fresh_server(["--token-file", str(tokens)])
    r = run_example(node_modules, srv.port)
    assert r.returncode == 1
    assert "UNAUTHENTICATED" in r.stderr or "missing token" in r.stderr, r.stderr
    r = run_example(node_modules, srv.port, {"REMOTEMEDIA_TOKEN": "node-token-0123456789abcdef"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "closed"
