"""Network escapes: what a sandbox with network must never reach, even with the broadest
allowlist, and forged packets. Uses the test world of tests/integration/test_network.py (its
own "host" and "internet" namespaces; nothing leaves this machine)."""
import os
import re
import subprocess
import time

import pytest

import harness
from harness import pb
from test_network import (HOST_UPLINK, METADATA, PRIVATE, PUBLIC, UPLINK_PEER, assert_refused_fast,  # noqa: F401
                          install, ndaemon, nettool, networked, nt, sandbox_addr, world)

BROAD = ["0.0.0.0/0", "::/0"]


def test_always_denied_even_with_broad_allowlist(ndaemon, nettool):
    sb = networked(ndaemon, nettool, BROAD)
    other = networked(ndaemon, nettool, BROAD)
    sid = sb.sandbox_id
    own, peer = sandbox_addr(ndaemon, sid), sandbox_addr(ndaemon, other.sandbox_id)
    gateway = re.sub(r"\d+$", lambda m: str(int(m.group(0)) - 1), own)
    # The broad allowlist does reach the internet: the refusals below are the policy's.
    assert nt(ndaemon, sid, "connect", PUBLIC, "80").startswith("OK")
    assert nt(ndaemon, sid, "connect", UPLINK_PEER, "80").startswith("OK")
    for target in (METADATA, "::ffff:169.254.169.254", "2852039166", "169.254.0.1", "fe80::1",
                   HOST_UPLINK, gateway, peer, PRIVATE, "192.168.1.1", "172.16.0.1", "100.64.0.1",
                   "fd00::1", "::ffff:10.20.0.5", "10.88.0.0"):
        assert_refused_fast(nt(ndaemon, sid, "connect", target, "80"))
    for target in (METADATA, "::ffff:169.254.169.254", PRIVATE, HOST_UPLINK, peer):
        assert_refused_fast(nt(ndaemon, sid, "udp", target, "9999"))
    # The sandbox's own loopback stays usable.
    assert not nt(ndaemon, sid, "connect", "127.0.0.1", "1", "500").startswith("ERR EPERM")
    harness.terminate(ndaemon.sb, other.sandbox_id)
    harness.terminate(ndaemon.sb, sid)


def test_exact_entry_opens_a_denied_range(ndaemon, nettool):
    sb = networked(ndaemon, nettool, BROAD + ["10.20.0.0/16"])
    line = nt(ndaemon, sb.sandbox_id, "connect", PRIVATE, "80")
    assert line.startswith("OK") and PRIVATE in line, line
    assert_refused_fast(nt(ndaemon, sb.sandbox_id, "connect", METADATA, "80"))
    harness.terminate(ndaemon.sb, sb.sandbox_id)


def test_spoofed_and_raw_packets_get_nowhere(ndaemon, nettool, world):
    sb = networked(ndaemon, nettool, ["203.0.113.0/24"])
    sid = sb.sandbox_id
    own = sandbox_addr(ndaemon, sid)
    # A legitimate datagram arrives (NATed): the recorder works, so silence below means a drop.
    assert nt(ndaemon, sid, "udp", PUBLIC, "9999").startswith("OK")
    # Forged source via a raw socket; and, where the sandbox may change its own address, a forged
    # address on its interface.
    raw = nt(ndaemon, sid, "rawspoof", "203.0.113.77", PUBLIC, "9999")
    raw_allowed = raw.startswith("OK")
    print(f"raw socket in the sandbox: {raw}")
    if not raw_allowed:
        assert raw.startswith("ERR EPERM"), raw  # CAP_NET_RAW dropped: refused outright
    else:
        # A raw packet with the sandbox's true source passes (tc only drops forgeries) ...
        assert nt(ndaemon, sid, "rawspoof", own, PUBLIC, "9999").startswith("OK")
    out, err, st = harness.run_exec(ndaemon.sb, sid, ["ip", "addr", "add", "198.18.0.9/32", "dev", "eth0"])
    print(f"ip addr add in the sandbox: exit {st.exit_code} {err.decode().strip()}")
    if st.exit_code == 0:
        harness.run_exec(ndaemon.sb, sid, ["ip", "route", "replace", "default", "via", re.sub(
            r"\d+$", lambda m: str(int(m.group(0)) - 1), own), "src", "198.18.0.9"])
        nt(ndaemon, sid, "udp", PUBLIC, "9999")
    # Whatever the sandbox's capabilities, the tc program on the host end is the last word: forge
    # packets on the sandbox's link from its namespace as a process holding every capability would
    # (host root entering only its network namespace, outside its cgroup: no socket hook applies).
    tool = os.path.join(world.tmp, "nettool")
    with open(tool, "wb") as f:
        f.write(nettool)
    os.chmod(tool, 0o755)
    init = harness.init_pid(ndaemon.cgroup_parent, sid)
    for src, data_tag in (("203.0.113.77", "forged"), (own, "true-source")):
        r = subprocess.run(["nsenter", f"--net=/proc/{init}/ns/net", tool, "rawspoof", src, PUBLIC, "9999"],
                           capture_output=True, text=True, timeout=20)
        assert r.stdout.startswith("OK"), (data_tag, r.stdout, r.stderr)
    time.sleep(0.5)  # datagrams in flight reach the recorder
    udp = [e for e in world.events() if e.get("kind") == "udp"]
    spoofed = [e for e in udp if e["data"] == "spoofed!"]
    # Exactly the true-source raw datagrams arrived (NATed); no forged one did.
    assert len(spoofed) == (2 if raw_allowed else 1), udp
    assert all(e["peer"] == HOST_UPLINK for e in udp), udp
    assert sum(1 for e in udp if e["data"] == "ping") == 1, udp
    got = ndaemon.sb.GetSandbox(pb.GetSandboxRequest(sandbox_id=sid)).sandbox
    assert got.network_counters.denied_packets >= 1, got.network_counters
    harness.terminate(ndaemon.sb, sid)


def test_ipv6_never_leaves(ndaemon, nettool):
    """No IPv6 on sandbox links: even an allowed v6 destination has no route, and anything
    IPv6 a sandbox forges on its link is dropped by the tc program."""
    sb = networked(ndaemon, nettool, BROAD)
    line = nt(ndaemon, sb.sandbox_id, "connect", "2001:db8::10", "80", "1000")
    assert line.startswith("ERR"), line
    harness.terminate(ndaemon.sb, sb.sandbox_id)


@pytest.mark.parametrize("n", [1])
def test_other_sandbox_unreachable_through_ports_only(ndaemon, nettool, n):
    """A sandbox with ports but no network still has nothing but loopback."""
    sb = harness.create_sandbox(ndaemon.sb, ports=[8080])
    install(ndaemon, sb.sandbox_id, nettool)
    assert nt(ndaemon, sb.sandbox_id, "connect", PUBLIC, "80", "1000").startswith("ERR ENETUNREACH")
    harness.terminate(ndaemon.sb, sb.sandbox_id)
