"""Networking (netpolicy/): per-sandbox veth + NAT + eBPF policy, and port tunnels.

Every test here runs in a world it builds (tests never send a packet off this machine):

    [test "host" netns H]  corrald runs here (nsenter --net), uplink up0 198.51.100.1/24
            | veth up0 <-> wan0
    [test "internet" netns I]  wan0 198.51.100.2/24; test servers on 203.0.113.10 (TEST-NET-3),
            169.254.169.254 (metadata), 10.20.0.5 (private), 2001:db8::10, resolver 203.0.113.53

Sandboxes get their probes through an exec's stdin: nettool.c (next to this file), built static.
"""
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

import grpc
import pytest

import harness
from harness import pb

HERE = os.path.dirname(os.path.abspath(__file__))
TAG = f"crl{os.getpid() % 100000}"
NS_HOST, NS_NET = f"{TAG}h", f"{TAG}i"
PUBLIC, METADATA, PRIVATE, UPLINK_PEER, HOST_UPLINK = "203.0.113.10", "169.254.169.254", "10.20.0.5", \
    "198.51.100.2", "198.51.100.1"
PUBLIC6 = "2001:db8::10"

# The "internet": a TCP "hello" server on port 80 of every address, an echo server on port 7 and
# a UDP recorder on port 9999 of PUBLIC. Connections and datagrams are logged as JSON lines.
SERVERS = r'''
import json, socket, sys, threading
log = open(sys.argv[1], "a", buffering=1)
addrs = sys.argv[2].split(",")
def note(**kw):
    log.write(json.dumps(kw) + "\n")
def hello(s, addr):
    while True:
        c, peer = s.accept()
        note(kind="tcp", to=addr, peer=peer[0])
        try:
            c.sendall(("hello from %s\n" % addr).encode())
        finally:
            c.close()
def echo(s):
    while True:
        c, peer = s.accept()
        def run(c=c):
            try:
                while True:
                    d = c.recv(4096)
                    if not d:
                        break
                    c.sendall(d)
            except OSError:
                pass
            c.close()
        threading.Thread(target=run, daemon=True).start()
def udp(s):
    while True:
        d, peer = s.recvfrom(2048)
        note(kind="udp", peer=peer[0], data=d.decode(errors="replace"))
for a in addrs:
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a, 80)); s.listen(64)
    threading.Thread(target=hello, args=(s, a), daemon=True).start()
e = socket.socket(); e.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
e.bind((addrs[0], 7)); e.listen(16)
threading.Thread(target=echo, args=(e,), daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((addrs[0], 9999))
threading.Thread(target=udp, args=(u,), daemon=True).start()
note(kind="ready")
threading.Event().wait()
'''


def sh(cmd, check=True):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd}: {r.stderr.strip()}")
    return r.stdout


def ip_forward(ns=None):
    pre = f"ip netns exec {ns} " if ns else ""
    return sh(f"{pre}cat /proc/sys/net/ipv4/ip_forward").strip()


class World:
    """The two namespaces, their veth, addresses and servers. down() removes everything."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="corral-net-")
        self.log = os.path.join(self.tmp, "servers.log")
        self.servers = None

    def up(self):
        sh(f"ip netns add {NS_HOST}")
        sh(f"ip netns add {NS_NET}")
        sh(f"ip link add name up0 netns {NS_HOST} type veth peer name wan0 netns {NS_NET}")
        for cmd in (f"-n {NS_HOST} link set lo up", f"-n {NS_HOST} addr add {HOST_UPLINK}/24 dev up0",
                    f"-n {NS_HOST} link set up0 up", f"-n {NS_HOST} route add default via {UPLINK_PEER}",
                    f"-n {NS_NET} link set lo up", f"-n {NS_NET} addr add {UPLINK_PEER}/24 dev wan0",
                    f"-n {NS_NET} link set wan0 up", f"-n {NS_NET} addr add {PUBLIC}/32 dev lo",
                    f"-n {NS_NET} addr add {METADATA}/32 dev lo", f"-n {NS_NET} addr add {PRIVATE}/32 dev lo",
                    f"-n {NS_NET} addr add 203.0.113.53/32 dev lo",
                    f"-n {NS_NET} -6 addr add {PUBLIC6}/128 dev lo nodad"):
            sh(f"ip {cmd}")
        addrs = ",".join([PUBLIC, METADATA, PRIVATE, UPLINK_PEER, PUBLIC6])
        self.servers = subprocess.Popen(["ip", "netns", "exec", NS_NET, "/usr/bin/python3", "-c", SERVERS,
                                         self.log, addrs], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not any(e["kind"] == "ready" for e in self.events()):
            assert time.monotonic() < deadline, "test servers did not start"
            time.sleep(0.05)

    def events(self):
        try:
            with open(self.log) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def down(self):
        if self.servers:
            self.servers.kill()
            self.servers.wait()
        sh(f"ip netns del {NS_NET}", check=False)
        sh(f"ip netns del {NS_HOST}", check=False)
        subprocess.run(["rm", "-rf", self.tmp])

    def host_links(self):
        return sh(f"ip -n {NS_HOST} -o link show")

    def host_addrs(self):
        return sh(f"ip -n {NS_HOST} -o addr show")

    def host_connect(self, port, host="127.0.0.1"):
        """Connect from inside the test host namespace (where corrald's tunnels listen)."""
        code = ("import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), 5);"
                "s.settimeout(5); d=b''\n"
                "while True:\n c=s.recv(4096)\n if not c: break\n d+=c\nprint(d.decode())")
        r = subprocess.run(["nsenter", f"--net=/run/netns/{NS_HOST}", "/usr/bin/python3", "-c", code, host,
                            str(port)], capture_output=True, text=True, timeout=20)
        return r.returncode, r.stdout + r.stderr


class NetDaemon(harness.Daemon):
    """corrald inside the test host namespace: only its network namespace changes (nsenter --net),
    so cgroups and mounts are the real host's, as for every other test daemon."""

    allow_network = True

    def argv(self):
        return ["nsenter", f"--net=/run/netns/{NS_HOST}", *super().argv()]


def bpf_prog_names():
    out = sh("bpftool -j prog show", check=False) or "[]"
    return sorted(p.get("name", "") for p in json.loads(out) if p.get("name", "").startswith("net_"))


@pytest.fixture(scope="module")
def nettool():
    out = os.path.join(tempfile.mkdtemp(prefix="corral-nettool-"), "nettool")
    r = subprocess.run(["gcc", "-static", "-O2", "-o", out, os.path.join(HERE, "nettool.c")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build the static probe nettool.c (needs gcc + static glibc): {r.stderr[-300:]}")
    with open(out, "rb") as f:
        data = f.read()
    subprocess.run(["rm", "-rf", os.path.dirname(out)])
    return data


@pytest.fixture(scope="module")
def world():
    if os.geteuid() != 0:
        pytest.skip("network tests need root (network namespaces)")
    if not os.path.isdir("/sys/fs/cgroup/unified") and not os.path.exists("/sys/fs/cgroup/cgroup.procs"):
        pytest.skip("networking needs a cgroup v2 hierarchy for its BPF programs")
    forward_before = ip_forward()
    w = World()
    try:
        w.up()
        yield w
    finally:
        w.down()
        # The daemon only ever changes forwarding inside the test's host namespace.
        assert ip_forward() == forward_before, "net.ipv4.ip_forward of the real host changed"


@pytest.fixture(scope="module")
def ndaemon(world):
    d = NetDaemon(extra_args=["--net-uplink", "up0", "--dns", "203.0.113.53", "--net-subnet", "10.88.0.0/16",
                              "--retention", "1"])
    try:
        d.start()
    except Exception as e:
        problems = d.shutdown_and_check()
        pytest.fail(f"corrald failed to start: {e}\n" + "\n".join(problems))
    yield d
    problems = d.shutdown_and_check()
    assert not problems, "host not clean after corrald stopped:\n" + "\n".join(problems)
    # With no networked sandbox left, a stopped daemon removes its NAT table.
    assert sh(f"ip netns exec {NS_HOST} nft list ruleset").strip() == ""
    # Sandbox links are named crl<slot>: all gone with their namespaces.
    assert not harness.wait_clean(lambda: re.findall(r"^\d+: (crl[0-9a-f]+)@", world.host_links(), re.M),
                                  timeout=15), world.host_links()


def create(d, **kw):
    return harness.create_sandbox(d.sb, **kw)


def install(d, sid, nettool):
    out, err, st = harness.run_exec(d.sb, sid, ["sh", "-c", "cat > /tmp/nt && chmod +x /tmp/nt"], stdin=nettool)
    assert st.exit_code == 0, (out, err, st)


def nt(d, sid, *args):
    out, err, st = harness.run_exec(d.sb, sid, ["/tmp/nt", *args], timeout_s=30)
    return out.decode().strip()


def assert_refused_fast(line):
    m = re.match(r"ERR (\S+) ([\d.]+)", line)
    assert m and m.group(1) == "EPERM", line
    assert float(m.group(2)) < 100, f"refusal took {m.group(2)} ms: {line}"


def sandbox_addr(d, sid):
    out, _, _ = harness.run_exec(d.sb, sid, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
    return re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out.decode()).group(1)


def networked(d, nettool, allow, **kw):
    sb = create(d, network=pb.NetworkPolicy(cidr_allowlist=allow), **kw)
    install(d, sb.sandbox_id, nettool)
    return sb


# --- tests ---------------------------------------------------------------------------------------

def test_default_sandbox_has_only_loopback(ndaemon, nettool):
    sb = create(ndaemon)
    install(ndaemon, sb.sandbox_id, nettool)
    out, _, _ = harness.run_exec(ndaemon.sb, sb.sandbox_id, ["ip", "-o", "link"])
    names = [ln.split(":")[1].strip() for ln in out.decode().splitlines()]
    assert names == ["lo"], names
    line = nt(ndaemon, sb.sandbox_id, "connect", PUBLIC, "80", "1000")
    assert line.startswith("ERR ENETUNREACH"), line
    assert not sb.HasField("network_counters")
    harness.terminate(ndaemon.sb, sb.sandbox_id)


def test_allowlisted_cidr_reachable_other_refused_at_once(ndaemon, nettool, world):
    sb = networked(ndaemon, nettool, ["203.0.113.0/24"])
    line = nt(ndaemon, sb.sandbox_id, "connect", PUBLIC, "80")
    assert line.startswith("OK") and f"hello from {PUBLIC}" in line, line
    assert_refused_fast(nt(ndaemon, sb.sandbox_id, "connect", UPLINK_PEER, "80"))
    assert_refused_fast(nt(ndaemon, sb.sandbox_id, "udp", UPLINK_PEER, "9999"))
    # NAT: the server saw the host's uplink address, not the sandbox's.
    peers = {e["peer"] for e in world.events() if e.get("kind") == "tcp" and e.get("to") == PUBLIC}
    assert peers == {HOST_UPLINK}, peers
    got = ndaemon.sb.GetSandbox(pb.GetSandboxRequest(sandbox_id=sb.sandbox_id)).sandbox
    assert list(got.network.cidr_allowlist) == ["203.0.113.0/24"]
    c = got.network_counters
    assert c.allowed_packets > 0 and c.allowed_bytes > 0 and c.denied_packets >= 2, c
    harness.terminate(ndaemon.sb, sb.sandbox_id)


def test_empty_allowlist_denies_all_but_dns(ndaemon, nettool):
    sb = networked(ndaemon, nettool, [])
    assert_refused_fast(nt(ndaemon, sb.sandbox_id, "connect", PUBLIC, "80"))
    # The resolver (--dns) is reachable on port 53 only.
    assert nt(ndaemon, sb.sandbox_id, "udp", "203.0.113.53", "53").startswith("OK")
    assert_refused_fast(nt(ndaemon, sb.sandbox_id, "udp", "203.0.113.53", "54"))
    harness.terminate(ndaemon.sb, sb.sandbox_id)


def test_policy_update_cuts_running_flow(ndaemon, nettool):
    sb = networked(ndaemon, nettool, ["203.0.113.0/24"])
    ex = harness.start_exec(ndaemon.sb, sb.sandbox_id, ["/tmp/nt", "hold", PUBLIC, "7"]).exec
    time.sleep(1.0)
    r = ndaemon.sb.UpdateNetworkPolicy(pb.UpdateNetworkPolicyRequest(
        sandbox_id=sb.sandbox_id, network=pb.NetworkPolicy(cidr_allowlist=["198.51.100.0/24"])))
    assert list(r.sandbox.network.cidr_allowlist) == ["198.51.100.0/24"]
    harness.wait_exec(ndaemon.sb, sb.sandbox_id, ex.exec_id, 20)
    out = harness.read_output(ndaemon.sb, sb.sandbox_id, ex.exec_id).decode()
    m = re.search(r"CUT after (\d+) echoes", out)
    assert m and int(m.group(1)) >= 3, out
    # The new policy holds for new connections too.
    assert_refused_fast(nt(ndaemon, sb.sandbox_id, "connect", PUBLIC, "80"))
    assert nt(ndaemon, sb.sandbox_id, "connect", UPLINK_PEER, "80").startswith("OK")
    harness.terminate(ndaemon.sb, sb.sandbox_id)


def test_update_policy_errors(ndaemon):
    sb = create(ndaemon)
    with pytest.raises(grpc.RpcError) as ei:
        ndaemon.sb.UpdateNetworkPolicy(pb.UpdateNetworkPolicyRequest(
            sandbox_id=sb.sandbox_id, network=pb.NetworkPolicy(cidr_allowlist=["0.0.0.0/0"])))
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for bad in (["300.1.1.1/8"], ["10.0.0.0/33"], ["nonsense"], ["1.2.3.4/8x"]):
        with pytest.raises(grpc.RpcError) as ei:
            create(ndaemon, network=pb.NetworkPolicy(cidr_allowlist=bad))
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    for ports in ([0], [70000], [80, 80], list(range(1, 40))):
        with pytest.raises(grpc.RpcError) as ei:
            create(ndaemon, ports=ports)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ports
    with pytest.raises(grpc.RpcError) as ei:
        ndaemon.sb.UpdateNetworkPolicy(pb.UpdateNetworkPolicyRequest(sandbox_id="sb-nope",
                                                                     network=pb.NetworkPolicy()))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    harness.terminate(ndaemon.sb, sb.sandbox_id)


HTTPD = ["sh", "-c", "mkdir -p /tmp/www && echo hello-port > /tmp/www/index.html && httpd -p 8080 -h /tmp/www"]


@pytest.mark.parametrize("with_network", [False, True])
def test_ports_reachable_from_host(ndaemon, with_network):
    kw = {"network": pb.NetworkPolicy(cidr_allowlist=[])} if with_network else {}
    sb = create(ndaemon, ports=[8080, 9090], **kw)
    assert list(sb.ports) == [8080, 9090]
    harness.run_exec(ndaemon.sb, sb.sandbox_id, HTTPD)
    t = ndaemon.sb.GetSandboxTunnels(pb.GetSandboxTunnelsRequest(sandbox_id=sb.sandbox_id)).tunnels
    assert [x.container_port for x in t] == [8080, 9090]
    assert all(x.host == "127.0.0.1" and x.host_port > 0 for x in t), t
    deadline = time.monotonic() + 5
    while True:
        rc, out = world_connect_http(t[0].host_port)
        if "hello-port" in out or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "hello-port" in out, out
    # Nothing listens on 9090 inside: the tunnel accepts, then closes.
    rc, out = world_connect_http(t[1].host_port)
    assert "hello-port" not in out
    harness.terminate(ndaemon.sb, sb.sandbox_id)
    harness.wait_sandbox(ndaemon.sb, sb.sandbox_id)
    rc, out = world_connect_http(t[0].host_port)
    assert rc != 0, "the tunnel still listens after terminate"


def world_connect_http(port):
    code = ("import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1])), 5); s.settimeout(5);"
            "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); d=b''\n"
            "while True:\n c=s.recv(4096)\n if not c: break\n d+=c\nprint(d.decode(errors='replace'))")
    r = subprocess.run(["nsenter", f"--net=/run/netns/{NS_HOST}", "/usr/bin/python3", "-c", code, str(port)],
                       capture_output=True, text=True, timeout=20)
    return r.returncode, r.stdout + r.stderr


def test_restart_keeps_policy_and_tunnels(ndaemon, nettool):
    sb = networked(ndaemon, nettool, ["203.0.113.0/24"], ports=[8080])
    harness.run_exec(ndaemon.sb, sb.sandbox_id, HTTPD)
    before = ndaemon.sb.GetSandboxTunnels(pb.GetSandboxTunnelsRequest(sandbox_id=sb.sandbox_id)).tunnels
    ndaemon.restart(signal.SIGKILL)
    after = ndaemon.sb.GetSandboxTunnels(pb.GetSandboxTunnelsRequest(sandbox_id=sb.sandbox_id)).tunnels
    assert [(t.container_port, t.host_port) for t in after] == [(t.container_port, t.host_port) for t in before]
    assert "hello-port" in world_connect_http(after[0].host_port)[1]
    assert nt(ndaemon, sb.sandbox_id, "connect", PUBLIC, "80").startswith("OK")
    assert_refused_fast(nt(ndaemon, sb.sandbox_id, "connect", UPLINK_PEER, "80"))
    got = ndaemon.sb.GetSandbox(pb.GetSandboxRequest(sandbox_id=sb.sandbox_id)).sandbox
    assert got.network_counters.denied_packets >= 1, got.network_counters
    ndaemon.sb.UpdateNetworkPolicy(pb.UpdateNetworkPolicyRequest(
        sandbox_id=sb.sandbox_id, network=pb.NetworkPolicy(cidr_allowlist=[])))
    assert_refused_fast(nt(ndaemon, sb.sandbox_id, "connect", PUBLIC, "80"))
    harness.terminate(ndaemon.sb, sb.sandbox_id)


def net_snapshot(world):
    return {
        "links": sorted(re.findall(r"^\d+: (\S+?)[@:]", world.host_links(), re.M)),
        "addrs": sorted(re.findall(r"inet6? (\S+)", world.host_addrs())),
        "nft": sh(f"ip netns exec {NS_HOST} nft list ruleset"),
        "progs": bpf_prog_names(),
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_200_cycles_leave_nothing_behind(ndaemon, world):
    sb = create(ndaemon, network=pb.NetworkPolicy(cidr_allowlist=["203.0.113.0/24"]), ports=[8080])
    harness.terminate(ndaemon.sb, sb.sandbox_id)  # networking is set up now: the baseline has its table
    harness.wait_sandbox(ndaemon.sb, sb.sandbox_id)
    time.sleep(0.5)
    base = net_snapshot(world)
    t0 = time.monotonic()
    for i in range(200):
        sb = create(ndaemon, network=pb.NetworkPolicy(cidr_allowlist=["203.0.113.0/24"]), ports=[8080])
        harness.terminate(ndaemon.sb, sb.sandbox_id)
    took = time.monotonic() - t0

    def diff():
        now = net_snapshot(world)
        return [f"{k}: {base[k]!r} -> {now[k]!r}" for k in base if base[k] != now[k]]
    problems = harness.wait_clean(diff, timeout=15)
    assert not problems, "\n".join(problems)
    db = sqlite3.connect(os.path.join(ndaemon.state_dir, "corral.db"))
    assert db.execute("SELECT count(*) FROM net_links").fetchone()[0] == 0
    db.close()
    # No namespace kept: no sandbox process left (its veth would be too, checked above), and the
    # daemon holds no namespace fd (a socket holding one would keep the veth: checked above).
    assert not harness.sandbox_pids(ndaemon.cgroup_parent)
    fds = [os.readlink(f"/proc/{ndaemon.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{ndaemon.pid}/fd")]
    assert not [f for f in fds if f.startswith("net:")], fds
    print(f"200 networked create/terminate cycles: {took:.1f} s")
