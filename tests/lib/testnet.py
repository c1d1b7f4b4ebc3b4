"""A network namespace of a test's own, reached from the host over a veth
pair: the only "outside" network tests may reach."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from typing import Iterator

import pytest


def host_ipv4() -> str | None:
    """A non-loopback IPv4 address of the host, if it has one."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", line)
        if m and not m.group(1).startswith("127."):
            return m.group(1)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def veth_netns(prefix: str, host_ip: str, peer_ip: str) -> Iterator[str]:
    """Create namespace <prefix><pid> with peer_ip/24, host side host_ip/24;
    yield its name; always remove both."""
    if shutil.which("ip") is None or not os.path.exists("/usr/bin/slirp4netns"):
        pytest.skip("needs iproute2 and slirp4netns")
    tag = "%d" % (os.getpid() % 100000)
    ns, veth, peer = prefix + tag, prefix + "h" + tag, prefix + "p" + tag
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("addr", "add", host_ip + "/24", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("-n", ns, "addr", "add", peer_ip + "/24", "dev", peer)
        _ip("-n", ns, "link", "set", peer, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
