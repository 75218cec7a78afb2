"""Network options of Sandbox.create, tunnels and policy updates (skipped, with the reason,
while the daemon lacks them)."""
import socket

import pytest

import corral


def test_ports_and_tunnels(client, requires):
    requires("tunnels")
    with corral.Sandbox.create(image="busybox", ports=[8000], client=client) as sb:
        p = sb.exec("sh", "-c", "echo hello-tunnel | nc -l -p 8000")
        tunnels = sb.tunnels()
        assert set(tunnels) == {8000}
        t = tunnels[8000]
        assert t.url == f"http://{t.host}:{t.port}"
        for _ in range(50):
            try:
                with socket.create_connection(t.tcp_socket, timeout=2) as s:
                    assert s.recv(100) == b"hello-tunnel\n"
                    break
            except (ConnectionRefusedError, AssertionError):
                import time
                time.sleep(0.1)
        else:
            pytest.fail("the tunnel never answered")
        p.wait()


def test_network_policy(client, requires):
    requires("network")
    try:
        sb = corral.Sandbox.create(image="busybox", block_network=False, cidr_allowlist=["192.0.2.0/24"],
                                   client=client)
    except corral.FailedPreconditionError as e:
        if "--no-network" not in str(e):
            raise
        # Test daemons on the real host run with --no-network (no forwarding/NAT changes here).
        pytest.skip(f"the test daemon has outbound networking off: {e}")
    with sb:
        assert list(sb._proto.network.cidr_allowlist) == ["192.0.2.0/24"]
        sb.update_network_policy(block_network=True)
        assert list(sb._proto.network.cidr_allowlist) == []


def test_disk_limit(client):
    try:
        sb = corral.Sandbox.create(image="busybox", ephemeral_disk=64, client=client)
    except corral.UnimplementedError as e:
        pytest.skip(f"the daemon does not enforce resources.disk_mib yet: {e}")
    try:
        assert sb.exec("true").wait() == 0
        assert sb._proto.resources.disk_mib in (0, 64)  # echoed back by daemons that report it
    finally:
        sb.terminate()


def test_network_argument_validation(client):
    with pytest.raises(corral.InvalidError):
        corral.Sandbox.create(image="busybox", block_network=False, cidr_allowlist=["not-a-cidr"], client=client)
    with pytest.raises(corral.InvalidError, match="TLS"):
        corral.Sandbox.create(image="busybox", encrypted_ports=[443], client=client)
