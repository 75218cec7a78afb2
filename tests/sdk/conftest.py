"""SDK tests: the real corrald of the integration fixtures, driven through the corral package.

The SDK is imported before the integration harness so that the harness's
`from corral.v1 import ...` resolves to the SDK's own generated stubs (one copy of each
message type in the process).
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SDK = os.path.join(REPO, "sdk", "python")
sys.path.insert(0, SDK)

import corral  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from fixtures import *  # noqa: E402,F401,F403
from fixtures import pytest_configure  # noqa: E402,F401

from corral.v1 import image_pb2, image_pb2_grpc  # noqa: E402
from corral.v1 import sandbox_pb2 as pb  # noqa: E402

import grpc  # noqa: E402


def _served(call):
    """False if the daemon answers UNIMPLEMENTED, True for any other answer."""
    try:
        r = call()
        if hasattr(r, "__next__"):
            next(r, None)
            r.cancel()
    except grpc.RpcError as e:
        return e.code() != grpc.StatusCode.UNIMPLEMENTED
    return True


# feature -> (how to probe, what the skip says)
_PROBES = {
    "filesystem": (lambda d: _served(lambda: d.sb.StatFile(pb.StatFileRequest(sandbox_id="sb-probe", path="/"), timeout=10)),
                   "the daemon does not serve the filesystem RPCs yet (StatFile: UNIMPLEMENTED)"),
    "snapshot": (lambda d: _served(lambda: d.sb.SnapshotFilesystem(pb.SnapshotFilesystemRequest(sandbox_id="sb-probe"), timeout=10)),
                 "the daemon does not serve SnapshotFilesystem yet (UNIMPLEMENTED)"),
    "images": (lambda d: _served(lambda: image_pb2_grpc.ImageServiceStub(d.channel).ListImages(image_pb2.ListImagesRequest(), timeout=10)),
               "the daemon does not serve ImageService yet (ListImages: UNIMPLEMENTED)"),
    "build": (lambda d: _served(lambda: image_pb2_grpc.ImageServiceStub(d.channel).BuildImage(
                  image_pb2.BuildImageRequest(base_image="sb-probe-none"), timeout=10)),
              "the daemon does not serve BuildImage yet (UNIMPLEMENTED)"),
    "network": (lambda d: _served(lambda: d.sb.UpdateNetworkPolicy(pb.UpdateNetworkPolicyRequest(sandbox_id="sb-probe"), timeout=10)),
                "the daemon does not serve network policies yet (UpdateNetworkPolicy: UNIMPLEMENTED)"),
    "tunnels": (lambda d: _served(lambda: d.sb.GetSandboxTunnels(pb.GetSandboxTunnelsRequest(sandbox_id="sb-probe"), timeout=10)),
                "the daemon does not serve GetSandboxTunnels yet (UNIMPLEMENTED)"),
    "python": (lambda d: "python" in d.sys.GetInfo(__import__("corral.v1.system_pb2", fromlist=["x"]).GetInfoRequest(), timeout=10).images,
               "the daemon has no `python` image yet (GetInfo.images lacks it)"),
}
_probed = {}


@pytest.fixture(scope="module")
def requires(daemon):
    """requires("filesystem") skips the test, with the reason, if the daemon lacks the feature.
    Each feature is probed once per daemon."""
    def check(feature):
        key = (id(daemon), feature)
        if key not in _probed:
            if daemon.channel is None:
                daemon.open_channel()
            _probed[key] = _PROBES[feature][0](daemon)
        if not _probed[key]:
            pytest.skip(_PROBES[feature][1])
    return check


@pytest.fixture(scope="module")
def addr(daemon):
    return "unix://" + daemon.socket


@pytest.fixture(scope="module")
def client(daemon, addr):
    """A corral.Client on the module's daemon (also the default client, via CORRAL_ADDR)."""
    old = os.environ.get("CORRAL_ADDR")
    os.environ["CORRAL_ADDR"] = addr
    corral._client._default = None
    c = corral.Client(addr, retry_timeout=30)
    yield c
    c.close()
    corral._client._default = None
    if old is None:
        os.environ.pop("CORRAL_ADDR", None)
    else:
        os.environ["CORRAL_ADDR"] = old


@pytest.fixture
def sb(client):
    """A fresh idle busybox sandbox (SDK object), terminated after the test."""
    s = corral.Sandbox.create(image="busybox", client=client)
    yield s
    try:
        s.terminate()
    except corral.Error:
        pass


def sdk_env(addr):
    """Environment for subprocesses (CLI, examples): the SDK importable, the daemon found."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SDK + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["CORRAL_ADDR"] = addr
    return env
