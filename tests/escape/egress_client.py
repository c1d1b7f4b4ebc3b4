#!/usr/bin/python3
"""Run inside a test's network namespace (nsenter --net=...): open a session
on the server there and try each destination from inside it; print what
each attempt got, as JSON.

usage: egress_client.py PORT JSON-LIST-OF-[kind, host, port]
kind: "tcp" (connect, read a line), "udp" (sendto), "nft" (open a netlink
socket to nftables, as a session would to change its rules).
"""
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))

from remotemedia.core.node import RemoteExecutorConfig  # noqa: E402
from remotemedia.remote import RemoteProxyClient  # noqa: E402


class Egress:
    def attempt(self, kind, host, port):
        import errno
        import socket
        try:
            if kind == "tcp":
                s = socket.create_connection((host, port), timeout=5)
                line = s.makefile("rb").readline()
                s.close()
                return "connected: " + line.decode().strip()
            if kind == "udp":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.sendto(b"x", (host, port))
                return "sent"
            if kind == "nft":
                s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETFILTER
                return "opened"
        except OSError as e:
            return errno.errorcode.get(e.errno, str(e))
        return "unknown kind"


async def main(port, targets):
    cfg = RemoteExecutorConfig(host="127.0.0.1", port=port, timeout=30.0)
    async with RemoteProxyClient(cfg) as client:
        p = await client.create_proxy(Egress())
        return [await p.attempt(*t) for t in targets]


if __name__ == "__main__":
    out = asyncio.run(asyncio.wait_for(main(int(sys.argv[1]), json.loads(sys.argv[2])), 120))
    print(json.dumps(out))
