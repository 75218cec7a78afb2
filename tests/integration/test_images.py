"""Images: snapshots and forks, the image store (delete refused while in use, GC), OCI import
(whiteouts, opaque dirs, hostile archives), and builds (debian + steps with a cache, python).

One daemon serves the whole module (the fixtures' module scope), so the debian and python
builds run at most once per test run: debian (mmdebstrap minbase) takes ~15 s, python
(debian + apt packages) ~40 s more on the reference machine. Both need the host's apt sources
and mirror: those tests skip with a reason when mmdebstrap is missing.
"""
import io
import json
import os
import shutil
import tarfile
import time
import uuid

import grpc
import pytest

import harness
from harness import pb

from corral.v1 import image_pb2 as ipb  # noqa: E402
from corral.v1 import image_pb2_grpc as ipb_grpc  # noqa: E402

BUILD_TIMEOUT = 900


@pytest.fixture(scope="module")
def images(daemon):
    return ipb_grpc.ImageServiceStub(daemon.channel)


def sh(stub, sid, script, timeout_s=60.0):
    out, err, st = harness.run_exec(stub, sid, ["sh", "-c", script], timeout_s=timeout_s)
    return out.decode(), err.decode(), st


def layer_dir(daemon, layer_id):
    return os.path.join(daemon.state_dir, "layers", layer_id)


def layer_ids_on_disk(daemon):
    d = os.path.join(daemon.state_dir, "layers")
    return {n for n in os.listdir(d) if not n.startswith(".")}


def snapshot(stub, sid, **kw):
    return stub.SnapshotFilesystem(pb.SnapshotFilesystemRequest(sandbox_id=sid, **kw),
                                   timeout=harness.RPC_TIMEOUT).image


def build(images, timeout=BUILD_TIMEOUT, **kw):
    """Run BuildImage to the end: (image, step_done events, log lines)."""
    img, steps, logs = None, [], []
    for ev in images.BuildImage(ipb.BuildImageRequest(**kw), timeout=timeout):
        which = ev.WhichOneof("event")
        if which == "log":
            logs.append(ev.log)
        elif which == "step_done":
            steps.append(ev.step_done)
        elif which == "image":
            img = ev.image
    assert img is not None, "BuildImage ended without an image:\n" + "\n".join(logs[-30:])
    return img, steps, logs


# --- snapshots --------------------------------------------------------------------------------

def test_snapshot_forks_see_files_and_stay_isolated(daemon, stub, images):
    src = harness.create_sandbox(stub)
    out, err, st = sh(stub, src.sandbox_id,
                      "mkdir -p /work/sub && echo hello > /work/a && echo deep > /work/sub/b && "
                      "dd if=/dev/zero of=/work/big bs=1024 count=256 2>/dev/null && rm /etc/hosts && "
                      "chmod 4755 /work/a && ln -s /work/a /work/link")
    assert st.exit_code == 0, err
    assert src.image_id, "Sandbox.image_id is filled"
    base = images.GetImage(ipb.GetImageRequest(image="busybox"), timeout=30).image
    assert src.image_id == base.image_id
    before = layer_ids_on_disk(daemon)
    t0 = time.monotonic()
    snap = snapshot(stub, src.sandbox_id, name="ws")
    took = time.monotonic() - t0
    assert snap.name == "ws" and snap.image_id != base.image_id
    # The snapshot is the base's layers plus one new layer: nothing of the base is copied.
    assert list(snap.layer_ids[:-1]) == list(base.layer_ids)
    new = layer_ids_on_disk(daemon) - before
    assert new == {snap.layer_ids[-1]}, new
    bl = layer_dir(daemon, base.layer_ids[0])
    assert os.stat(os.path.join(bl, "bin/busybox")).st_ino == os.stat(os.path.join(bl, "bin/busybox")).st_ino
    top = layer_dir(daemon, snap.layer_ids[-1])
    assert not os.path.exists(os.path.join(top, "bin/busybox")), "the snapshot layer copied the base"
    # Stored unshifted (0-based owners), setuid stripped, whiteout kept for the deleted file.
    st_a = os.lstat(os.path.join(top, "work/a"))
    assert (st_a.st_uid, st_a.st_gid) == (0, 0) and not st_a.st_mode & 0o6000
    wh = os.lstat(os.path.join(top, "etc/hosts"))
    assert os.major(wh.st_rdev) == 0 and os.minor(wh.st_rdev) == 0 and (wh.st_mode & 0o170000) == 0o020000
    print(f"snapshot of ~260 KiB of changes: {took * 1000:.1f} ms (RPC round trip)")

    forks = [harness.create_sandbox(stub, image=snap.image_id) for _ in range(5)]
    try:
        for f in forks:
            assert f.image_id == snap.image_id
            out, err, st = sh(stub, f.sandbox_id,
                              "cat /work/a /work/sub/b; stat -c %s /work/big; readlink /work/link; "
                              "test -e /etc/hosts && echo hosts-present || echo hosts-gone")
            assert st.exit_code == 0, err
            assert out.split() == ["hello", "deep", "262144", "/work/a", "hosts-gone"], out
        # A change in one fork is invisible to the others and to the source.
        sh(stub, forks[0].sandbox_id, "echo changed > /work/a && rm /work/sub/b && touch /work/new")
        for sb in [src] + forks[1:]:
            out, _, _ = sh(stub, sb.sandbox_id, "cat /work/a; ls /work/sub; ls /work/new 2>&1 || true")
            assert out.startswith("hello\nb\n") and "No such file" in out, (sb.sandbox_id, out)
        out, _, _ = sh(stub, forks[0].sandbox_id, "cat /work/a")
        assert out == "changed\n"
        # By name too.
        byname = harness.create_sandbox(stub, image="ws")
        assert byname.image_id == snap.image_id
        harness.terminate(stub, byname.sandbox_id)
    finally:
        for f in forks:
            harness.terminate(stub, f.sandbox_id)
        harness.terminate(stub, src.sandbox_id)


def test_snapshot_of_snapshot_and_errors(daemon, stub, images):
    a = harness.create_sandbox(stub)
    sh(stub, a.sandbox_id, "echo one > /one")
    s1 = snapshot(stub, a.sandbox_id)
    b = harness.create_sandbox(stub, image=s1.image_id)
    sh(stub, b.sandbox_id, "echo two > /two")
    s2 = snapshot(stub, b.sandbox_id)
    assert list(s2.layer_ids[:-1]) == list(s1.layer_ids)
    c = harness.create_sandbox(stub, image=s2.image_id)
    out, _, _ = sh(stub, c.sandbox_id, "cat /one /two")
    assert out == "one\ntwo\n"
    for sid in (a.sandbox_id, b.sandbox_id, c.sandbox_id):
        harness.terminate(stub, sid)
    cases = [
        (dict(sandbox_id="sb-nosuch"), grpc.StatusCode.NOT_FOUND),
        (dict(sandbox_id=a.sandbox_id), grpc.StatusCode.FAILED_PRECONDITION),  # finished
        (dict(sandbox_id=a.sandbox_id, name="../x"), grpc.StatusCode.INVALID_ARGUMENT),
        (dict(sandbox_id=a.sandbox_id, name="busybox"), grpc.StatusCode.INVALID_ARGUMENT),
        (dict(sandbox_id=a.sandbox_id, ttl_ms=-1), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for kw, code in cases:
        with pytest.raises(grpc.RpcError) as ei:
            snapshot(stub, **kw) if "sandbox_id" not in kw else \
                stub.SnapshotFilesystem(pb.SnapshotFilesystemRequest(**kw), timeout=30)
        assert ei.value.code() == code, (kw, ei.value)


def test_delete_refused_while_in_use_then_gc(daemon, stub, images):
    src = harness.create_sandbox(stub)
    sh(stub, src.sandbox_id, "echo gc > /gc-me")
    snap = snapshot(stub, src.sandbox_id, name="gc-test")
    harness.terminate(stub, src.sandbox_id)
    user = harness.create_sandbox(stub, image="gc-test")
    with pytest.raises(grpc.RpcError) as ei:
        images.DeleteImage(ipb.DeleteImageRequest(image="gc-test"), timeout=30)
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "used by a running sandbox" in ei.value.details()
    harness.terminate(stub, user.sandbox_id)  # then delete at once: no wait needed
    top = layer_dir(daemon, snap.layer_ids[-1])
    assert os.path.isdir(top)
    images.DeleteImage(ipb.DeleteImageRequest(image="gc-test"), timeout=30)
    with pytest.raises(grpc.RpcError) as ei:
        images.GetImage(ipb.GetImageRequest(image="gc-test"), timeout=30)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    deadline = time.monotonic() + 15
    while os.path.exists(top) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(top), "GC left the unreferenced layer"
    assert os.path.isdir(layer_dir(daemon, snap.layer_ids[0])), "GC removed a layer still in use (busybox)"


def test_snapshot_ttl_expires(daemon, stub, images):
    src = harness.create_sandbox(stub)
    snap = snapshot(stub, src.sandbox_id, ttl_ms=500)
    harness.terminate(stub, src.sandbox_id)
    assert snap.expires_at_ms > 0
    time.sleep(0.8)
    with pytest.raises(grpc.RpcError) as ei:
        images.GetImage(ipb.GetImageRequest(image=snap.image_id), timeout=30)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_and_getinfo(daemon, stub, images):
    src = harness.create_sandbox(stub)
    snapshot(stub, src.sandbox_id, name="listed")
    harness.terminate(stub, src.sandbox_id)
    names = {i.name for i in images.ListImages(ipb.ListImagesRequest(), timeout=30).images}
    assert {"busybox", "listed"} <= names
    info = daemon.sys.GetInfo(harness.spb.GetInfoRequest(), timeout=30)
    assert {"busybox", "debian", "python", "listed"} <= set(info.images)


# --- OCI import -------------------------------------------------------------------------------

def tar_bytes(entries):
    """entries: (name, kind, data/target); kind in file, dir, symlink, hardlink, chr, raw."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            if kind == "file":
                ti.size = len(data)
                ti.mode = 0o755
                t.addfile(ti, io.BytesIO(data))
                continue
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, data
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, data
            elif kind == "chr":
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
            t.addfile(ti)
    return buf.getvalue()


def busybox_layer():
    with open("/bin/busybox", "rb") as f:
        bb = f.read()
    return [("bin", "dir", None), ("bin/busybox", "file", bb), ("bin/sh", "symlink", "busybox"),
            ("bin/ls", "symlink", "busybox"), ("bin/cat", "symlink", "busybox")]


def docker_save(layers, config=None):
    """A docker-save archive of the given layer tars (bottom first)."""
    files, names = [], []
    for i, layer in enumerate(layers):
        names.append(f"l{i}/layer.tar")
        files.append((f"l{i}", "dir", None))
        files.append((f"l{i}/layer.tar", "file", layer))
    cfg = json.dumps(config or {"config": {"Env": ["FOO=bar"], "WorkingDir": "/data"}}).encode()
    files.append(("config.json", "file", cfg))
    files.append(("manifest.json", "file",
                  json.dumps([{"Config": "config.json", "RepoTags": ["t:1"], "Layers": names}]).encode()))
    return tar_bytes(files)


def oci_layout(layers):
    import hashlib
    blobs, descs = [], []
    for layer in layers:
        d = hashlib.sha256(layer).hexdigest()
        blobs.append((f"blobs/sha256/{d}", "file", layer))
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{d}",
                      "size": len(layer)})
    cfg = json.dumps({"config": {"Env": ["OCI=1"]}}).encode()
    cd = hashlib.sha256(cfg).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": f"sha256:{cd}", "size": len(cfg)},
                           "layers": descs}).encode()
    md = hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [{"digest": f"sha256:{md}", "size": len(manifest)}]})
    return tar_bytes([("oci-layout", "file", b'{"imageLayoutVersion":"1.0.0"}'), ("blobs", "dir", None),
                      ("blobs/sha256", "dir", None), *blobs, (f"blobs/sha256/{cd}", "file", cfg),
                      (f"blobs/sha256/{md}", "file", manifest), ("index.json", "file", index.encode())])


def import_image(images, data, name="", chunk=1 << 20):
    def reqs():
        for i in range(0, len(data), chunk):
            yield ipb.ImportImageRequest(name=name if i == 0 else "", data=data[i:i + chunk])
    return images.ImportImage(reqs(), timeout=120).image


def layered_archives():
    l1 = tar_bytes(busybox_layer() + [
        ("data", "dir", None), ("data/a", "file", b"A\n"), ("data/b", "file", b"B\n"),
        ("opq", "dir", None), ("opq/x", "file", b"X\n"), ("opq/keep-not", "file", b"K\n"),
        ("data/hl", "hardlink", "data/b")])
    l2 = tar_bytes([("data", "dir", None), ("data/.wh.a", "file", b""), ("data/c", "file", b"C\n"),
                    ("opq", "dir", None), ("opq/.wh..wh..opq", "file", b""), ("opq/y", "file", b"Y\n")])
    return [l1, l2]


@pytest.mark.parametrize("fmt", ["docker-save", "oci-layout"])
def test_oci_import_whiteouts_and_opaque(daemon, stub, images, fmt):
    layers = layered_archives()
    data = docker_save(layers) if fmt == "docker-save" else oci_layout(layers)
    img = import_image(images, data, name=f"imported-{fmt}")
    assert len(img.layer_ids) == 2
    if fmt == "docker-save":
        assert dict(img.env) == {"FOO": "bar"} and img.workdir == "/data"
    sb = harness.create_sandbox(stub, image=img.image_id)
    try:
        out, err, st = sh(stub, sb.sandbox_id, "ls /data; echo --; ls /opq; echo --; cat /data/hl /data/c")
        assert st.exit_code == 0, err
        assert out.split("--") == ["b\nc\nhl\n", "\ny\n", "\nB\nC\n"], out
        if fmt == "docker-save":  # the image's ENV and WORKDIR apply to the sandbox's execs
            out, err, st = sh(stub, sb.sandbox_id, "echo $FOO; pwd")
            assert out == "bar\n/data\n", (out, err)
            own = harness.create_sandbox(stub, image=img.image_id, env={"FOO": "mine"}, workdir="/opq")
            try:
                out, err, st = sh(stub, own.sandbox_id, "echo $FOO; pwd")
                assert out == "mine\n/opq\n", (out, err)  # the request wins over the image
            finally:
                harness.terminate(stub, own.sandbox_id)
    finally:
        harness.terminate(stub, sb.sandbox_id)
    # The same archive again: same layers, same image, nothing new on disk.
    before = layer_ids_on_disk(daemon)
    again = import_image(images, data)
    assert again.image_id == img.image_id and layer_ids_on_disk(daemon) == before


def _evil_cases(canary):
    rel = os.path.relpath(canary, "/")
    return {
        "dotdot": [("../" * 12 + rel, "file", b"pwned")],
        "absolute": [("/" + rel, "file", b"pwned")],
        "symlink-then-file": [("esc", "symlink", os.path.dirname(canary)),
                              ("esc/" + os.path.basename(canary), "file", b"pwned")],
        "symlink-dotdot": [("esc", "symlink", "../../../../../../../" + os.path.dirname(rel)),
                           ("esc/" + os.path.basename(canary), "file", b"pwned")],
        "hardlink-host": [("passwd", "hardlink", "/etc/passwd")],
        "hardlink-dotdot": [("passwd", "hardlink", "../../../../../../etc/passwd")],
        "device": [("null", "chr", None)],
    }


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink-then-file", "symlink-dotdot", "hardlink-host",
                                  "hardlink-dotdot", "device"])
@pytest.mark.parametrize("where", ["layer", "outer"])
def test_oci_import_refuses_hostile_archives(daemon, images, case, where, tmp_path):
    canary = str(tmp_path / f"canary-{uuid.uuid4().hex[:8]}")
    entries = _evil_cases(canary)[case]
    if where == "layer":
        data = docker_save([tar_bytes(busybox_layer() + entries)])
    else:
        data = tar_bytes(entries + [("manifest.json", "file", b"[]")])
    passwd = open("/etc/passwd", "rb").read()
    before = layer_ids_on_disk(daemon)
    with pytest.raises(grpc.RpcError) as ei:
        import_image(images, data)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value
    assert "refused" in ei.value.details(), ei.value.details()
    assert not os.path.exists(canary) and not os.path.lexists(canary)
    assert open("/etc/passwd", "rb").read() == passwd
    assert os.stat("/etc/passwd").st_nlink == 1
    assert layer_ids_on_disk(daemon) <= before | {l for l in layer_ids_on_disk(daemon) if l in before}
    scratch = os.path.join(daemon.state_dir, "builds")
    assert not [n for n in os.listdir(scratch) if n.startswith("import-")], "import scratch left behind"


def test_import_setuid_stripped_and_errors(daemon, images):
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        ti = tarfile.TarInfo("suid")
        ti.size, ti.mode = 2, 0o6755
        t.addfile(ti, io.BytesIO(b"x\n"))
    img = import_image(images, docker_save([layer.getvalue()]))
    st = os.lstat(os.path.join(layer_dir(daemon, img.layer_ids[0]), "suid"))
    assert st.st_mode & 0o7777 == 0o755
    with pytest.raises(grpc.RpcError) as ei:
        import_image(images, b"not a tar at all" * 100)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as ei:
        import_image(images, docker_save([layer.getvalue()]), name="debian")
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- builds (debian, steps, python) ---------------------------------------------------------

def need_mmdebstrap():
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap is not installed (scripts/deps.sh installs it): debian/python images cannot be built")


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_stepped_build_and_cache(daemon, stub, images):
    need_mmdebstrap()
    spec = dict(base_image="debian", name="with-jq", steps=[
        ipb.BuildStep(apt_install=ipb.AptInstall(packages=["jq"])),
        ipb.BuildStep(env=ipb.SetEnv(env={"GREETING": "hi"})),
        ipb.BuildStep(workdir=ipb.SetWorkdir(workdir="/app")),
        ipb.BuildStep(run_commands=ipb.RunCommands(commands=[
            'echo "$GREETING from $(pwd)" > /app/built', "jq -n '{a: 1}' > /app/out.json"])),
        ipb.BuildStep(copy=ipb.CopyFiles(dest="/app/src", tar=tar_bytes([("main.txt", "file", b"copied\n")]))),
    ])
    t0 = time.monotonic()
    img, steps, logs = build(images, **spec)
    first = time.monotonic() - t0
    print(f"debian + apt_install(jq) + run_commands + copy: {first:.1f} s (includes the debian base build)")
    assert [s.cached for s in steps if s.layer_id] == [False, False, False], steps
    assert dict(img.env)["GREETING"] == "hi" and img.workdir == "/app"
    sb = harness.create_sandbox(stub, image="with-jq")
    try:
        out, err, st = sh(stub, sb.sandbox_id, "cat /app/built /app/src/main.txt; jq -c . /app/out.json; jq --version")
        assert st.exit_code == 0, err
        assert out.startswith("hi from /app\ncopied\n{\"a\":1}\njq-"), out
    finally:
        harness.terminate(stub, sb.sandbox_id)
    before = layer_ids_on_disk(daemon)
    t0 = time.monotonic()
    img2, steps2, _ = build(images, **spec)
    second = time.monotonic() - t0
    print(f"same spec again (cache): {second * 1000:.0f} ms")
    assert img2.image_id == img.image_id
    assert all(s.cached for s in steps2), steps2
    assert layer_ids_on_disk(daemon) == before, "a cached rebuild created a layer"
    # A failing step fails the build with its log, and leaves no layer.
    with pytest.raises(grpc.RpcError) as ei:
        build(images, base_image="debian", steps=[ipb.BuildStep(run_commands=ipb.RunCommands(
            commands=["echo about to fail", "exit 3"]))])
    assert "exited with status 3" in ei.value.details()
    assert layer_ids_on_disk(daemon) == before


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_python_image_runs_numpy_pandas(daemon, stub, images):
    need_mmdebstrap()
    t0 = time.monotonic()
    img, _, logs = build(images, base_image="python")
    print(f"python image: {time.monotonic() - t0:.1f} s, {img.size_bytes / 1e6:.0f} MB, {len(img.layer_ids)} layers")
    sb = harness.create_sandbox(stub, image="python")
    try:
        script = ("import numpy as np, pandas as pd\n"
                  "df = pd.DataFrame({'x': np.arange(10)})\n"
                  "print(int(df.x.sum()), np.__version__ > '1')\n")
        out, err, st = harness.run_exec(stub, sb.sandbox_id, ["python", "-c", script], timeout_s=120)
        assert st.exit_code == 0, err
        assert out.decode().strip() == "45 True"
        out, err, st = harness.run_exec(stub, sb.sandbox_id, ["python3", "-m", "pip", "--version"])
        assert st.exit_code == 0, err
    finally:
        harness.terminate(stub, sb.sandbox_id)


def test_build_validation(images):
    bad = [
        dict(base_image=""),
        dict(base_image="busybox", name="debian"),
        dict(base_image="busybox", steps=[ipb.BuildStep(apt_install=ipb.AptInstall(packages=["-oEvil=1"]))]),
        dict(base_image="busybox", steps=[ipb.BuildStep(workdir=ipb.SetWorkdir(workdir="rel"))]),
        dict(base_image="busybox", steps=[ipb.BuildStep()]),
        dict(base_image="busybox", steps=[ipb.BuildStep(env=ipb.SetEnv(env={"A=B": "x"}))]),
    ]
    for kw in bad:
        with pytest.raises(grpc.RpcError) as ei:
            build(images, **kw)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kw
    with pytest.raises(grpc.RpcError) as ei:
        build(images, base_image="nosuch-image", steps=[ipb.BuildStep(run_commands=ipb.RunCommands(commands=["true"]))])
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def test_busybox_step_build(daemon, stub, images):
    img, steps, logs = build(images, base_image="busybox", name="bb-step", steps=[
        ipb.BuildStep(run_commands=ipb.RunCommands(commands=["echo step > /stepfile", "id -u > /uid"]))])
    assert len(img.layer_ids) == 2 and not steps[0].cached
    sb = harness.create_sandbox(stub, image="bb-step")
    try:
        out, _, _ = sh(stub, sb.sandbox_id, "cat /stepfile /uid; stat -c %u /stepfile")
        assert out == "step\n0\n0\n", out
    finally:
        harness.terminate(stub, sb.sandbox_id)


def test_build_with_network_is_refused_not_ignored(images):
    req = ipb.BuildImageRequest(base_image="busybox", allow_network=True,
                                steps=[ipb.BuildStep(run_commands=ipb.RunCommands(commands=["true"]))])
    with pytest.raises(grpc.RpcError) as e:
        list(images.BuildImage(req, timeout=30))
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED and "allow_network" in e.value.details()
