"""The egress policy of isolated sessions (--session-egress-allow and
--session-egress-deny), in network namespaces this test creates:

  rmeg-host-N   where the server runs (through nsenter --net, so that its
                mounts and cgroups are the host's); 192.0.2.10 on its lo
                stands in for an address of the host itself;
  rmeg-peer-N   the rest of the world, behind a veth pair: listeners on a
                link-local, two private and two public-looking addresses.

Each attempt from inside a session, and the exact result it gets: TCP
connects to a denied address fail at once with EHOSTUNREACH (an ICMP
administratively-prohibited answer), datagrams with EPERM; the session
cannot open the netlink socket that would change the rules (EPERM, from
seccomp; it has no CAP_NET_ADMIN either).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PORT = 47123  # in the test's own namespaces only

pytestmark = pytest.mark.skipif(
    shutil.which("ip") is None or shutil.which("nsenter") is None,
    reason="needs ip (iproute2) and nsenter (util-linux)")

LISTENER = r"""
import socket, sys, threading, time
def serve(addr):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, %d)); s.listen(16); s.settimeout(1)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        c.sendall(b"hello from " + addr.encode() + b"\n"); c.close()
for a in sys.argv[1:]:
    threading.Thread(target=serve, args=(a,), daemon=True).start()
print("ready", flush=True)
time.sleep(120)
""" % PORT


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def netns():
    n = os.getpid()
    host, peer = f"rmeg-host-{n}", f"rmeg-peer-{n}"
    listeners: list[subprocess.Popen] = []
    try:
        ip("netns", "add", host)
        ip("netns", "add", peer)
        for ns in (host, peer):
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", host, "addr", "add", "192.0.2.10/32", "dev", "lo")
        ip("-n", host, "link", "add", "veth-h", "type", "veth", "peer", "name", "veth-p",
           "netns", peer)
        for net in ("169.254.50", "10.77.0", "10.88.0", "198.51.100", "203.0.113"):
            ip("-n", host, "addr", "add", f"{net}.1/24", "dev", "veth-h")
            ip("-n", peer, "addr", "add", f"{net}.2/24", "dev", "veth-p")
        ip("-n", host, "link", "set", "veth-h", "up")
        ip("-n", peer, "link", "set", "veth-p", "up")
        for ns, addrs in ((host, ["192.0.2.10"]),
                          (peer, ["169.254.50.2", "10.77.0.2", "10.88.0.2",
                                  "198.51.100.2", "203.0.113.2"])):
            p = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", sys.executable,
                                  "-c", LISTENER, *addrs], stdout=subprocess.PIPE, text=True)
            assert p.stdout.readline().strip() == "ready"
            listeners.append(p)
        yield host
    finally:
        for p in listeners:
            p.kill()
            p.wait()
        for ns in (host, peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def attempts(host_ns: str, srv, targets: list) -> list[str]:
    r = subprocess.run(["nsenter", f"--net=/run/netns/{host_ns}", sys.executable,
                        str(HERE / "egress_client.py"), str(srv.port), json.dumps(targets)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr + srv.log_text()[-3000:]
    return json.loads(r.stdout)


def test_the_egress_policy_inside_a_session(servers, netns):
    srv = servers.start(
        ["--session-pool", "0", "--session-network", "isolated",
         "--session-egress-allow", "10.77.0.0/24",
         "--session-egress-deny", "198.51.100.0/24"],
        wrapper=["nsenter", f"--net=/run/netns/{netns}"])
    cases = [
        # (kind, host, port), what it must get
        (("tcp", "192.0.2.10", PORT), "EHOSTUNREACH"),       # the host's own
        (("tcp", "169.254.50.2", PORT), "EHOSTUNREACH"),     # link-local
        (("tcp", "169.254.169.254", 80), "EHOSTUNREACH"),    # cloud metadata
        (("tcp", "10.88.0.2", PORT), "EHOSTUNREACH"),        # private
        (("tcp", "198.51.100.2", PORT), "EHOSTUNREACH"),     # --session-egress-deny
        (("tcp", "10.77.0.2", PORT), "connected: hello from 10.77.0.2"),   # allowed
        (("tcp", "203.0.113.2", PORT), "connected: hello from 203.0.113.2"),  # the rest
        (("udp", "169.254.50.2", PORT), "EPERM"),
        (("udp", "192.0.2.10", PORT), "EPERM"),
        (("nft", "", 0), "EPERM"),                          # cannot change the rules
    ]
    got = attempts(netns, srv, [list(t) for t, _ in cases])
    assert got == [want for _, want in cases], list(zip([t for t, _ in cases], got))


def test_every_listener_is_reachable_when_all_is_allowed(servers, netns):
    """The control: with 0.0.0.0/0 allowed, the same sessions reach every
    listener, so the refusals above are the policy's doing."""
    srv = servers.start(
        ["--session-pool", "0", "--session-network", "isolated",
         "--session-egress-allow", "0.0.0.0/0"],
        wrapper=["nsenter", f"--net=/run/netns/{netns}"])
    addrs = ["192.0.2.10", "169.254.50.2", "10.88.0.2", "198.51.100.2"]
    got = attempts(netns, srv, [["tcp", a, PORT] for a in addrs])
    assert got == [f"connected: hello from {a}" for a in addrs], got


def test_a_bad_cidr_is_refused_at_start():
    from serverlib import BUILD
    for bad in ("10.0.0.0/33", "not-an-address", "10.1.2.3/", "::1/129"):
        r = subprocess.run([str(BUILD / "remotemediad"), "--listen", "127.0.0.1:0",
                            "--session-egress-allow", bad],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 2 and "--session-egress-allow" in r.stderr, (bad, r.stderr)


def test_the_policy_is_in_rmctl_info(servers):
    from serverlib import BUILD
    srv = servers.start(["--session-egress-allow", "10.77.0.0/24",
                         "--session-egress-allow", "fd00::/8"])
    r = subprocess.run([str(BUILD / "rmctl"), "info", "--port", str(srv.port), "--json"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["limits"]["session-egress-allow"] == "10.77.0.0/24,fd00::/8"


def test_slirp4netns_leaves_the_hosts_shared_mounts_alone(servers, netns):
    """slirp4netns's own sandbox unmounts its old root after pivot_root;
    started in the host's mount namespace, the unmount propagated to every
    shared mount below, such as this test's /run/netns/NAME (ip netns add):
    the second server in the namespace then could not enter it. It now
    runs in a private mount namespace."""
    def mounted() -> bool:
        with open("/proc/self/mountinfo") as f:
            return any(f" /run/netns/{netns} " in line for line in f)
    assert mounted()
    srv = servers.start(["--session-pool", "2", "--session-network", "isolated"],
                        wrapper=["nsenter", f"--net=/run/netns/{netns}"])
    got = attempts(netns, srv, [["tcp", "203.0.113.2", PORT]])
    assert got == ["connected: hello from 203.0.113.2"]
    assert mounted()
    r = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "true"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_without_tokens_only_loopback_may_list_or_end_sessions(servers, netns):
    """A server told --allow-unauthenticated serves a network address with
    no token file: its clients have no owner, so listing and ending
    sessions is for loopback clients only (PERMISSION_DENIED, 7)."""
    from serverlib import BUILD
    srv = servers.start(["--listen", "0.0.0.0:0", "--allow-unauthenticated", "on",
                         "--session-pool", "0"],
                        wrapper=["nsenter", f"--net=/run/netns/{netns}"])
    peer = netns.replace("rmeg-host-", "rmeg-peer-")

    def rmctl(ns, host, *args):
        return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", str(BUILD / "rmctl"),
                               *args, "--host", host, "--port", str(srv.port)],
                              capture_output=True, text=True, timeout=60)
    r = rmctl(peer, "198.51.100.1", "sessions")
    assert r.returncode == 7 and "loopback" in r.stderr, r.stderr
    r = rmctl(peer, "198.51.100.1", "kill", "0" * 32)
    assert r.returncode == 7, r.stderr
    r = rmctl(peer, "198.51.100.1", "info")  # what it runs is no secret
    assert r.returncode == 0, r.stderr
    r = rmctl(netns, "127.0.0.1", "sessions")
    assert r.returncode == 0 and r.stdout.startswith("SESSION"), r.stderr
