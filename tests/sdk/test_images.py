"""corral.Image: built-ins, builds with progress, imports, snapshots (skipped, with the reason,
while the daemon lacks ImageService / SnapshotFilesystem)."""
import io
import json
import os
import tarfile

import pytest

import corral


def test_recipes_are_lazy_and_validated(tmp_path):
    img = corral.Image.debian_slim().apt_install("jq", ["curl"]).run_commands("echo a", "echo b").env({"A": "1"})
    assert img.object_id is None and len(img._steps) == 3 and img._base == "python"
    assert corral.Image.from_name("busybox")._ref is not None
    with pytest.raises(corral.InvalidError):
        corral.Image.from_oci_archive(tmp_path / "missing.tar")
    with pytest.raises(corral.InvalidError):
        corral.Image.from_name("")
    f = tmp_path / "f.txt"
    f.write_text("x")
    step = corral.Image.from_name("busybox").add_local_file(f, "/opt/f.txt")._steps[0]
    names = tarfile.open(fileobj=io.BytesIO(step.copy.tar)).getnames()
    assert step.copy.dest == "/opt" and names == ["f.txt"]


def test_list_and_lookup(client, requires):
    requires("images")
    images = corral.Image.list(client=client)
    assert any(i.name == "busybox" for i in images)
    bb = corral.Image.lookup("busybox", client=client)
    assert bb.object_id and bb.layer_ids
    assert corral.Image.from_name("busybox", client=client).build().object_id == bb.object_id
    with pytest.raises(corral.NotFoundError):
        corral.Image.lookup("no-such-image", client=client)


def test_build_with_steps_progress_and_cache(client, requires, tmp_path, capfd):
    requires("build")
    f = tmp_path / "data.txt"
    f.write_text("from the client\n")
    img = (corral.Image.from_name("busybox", client=client)
           .run_commands("echo built > /built.txt")
           .env({"GREETING": "hi"})
           .add_local_file(f, "/opt/data.txt"))
    events = []
    img.build(progress=events.append)
    assert img.object_id and any(e.WhichOneof("event") == "step_done" for e in events)
    with corral.enable_output():
        again = (corral.Image.from_name("busybox", client=client).run_commands("echo built > /built.txt")
                 .env({"GREETING": "hi"}).add_local_file(f, "/opt/data.txt"))
        with corral.Sandbox.create(image=again, client=client) as sb:
            p = sb.exec("sh", "-c", "cat /built.txt /opt/data.txt; echo $GREETING")
            assert p.stdout.read() == "built\nfrom the client\nhi\n"
    assert again.object_id == img.object_id  # every step a cache hit
    assert "cached" in capfd.readouterr().err


def test_import_oci_archive(client, requires, tmp_path):
    requires("images")
    # A one-layer docker-save archive holding a file, on top of nothing (busybox-less).
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        data = b"imported\n"
        ti = tarfile.TarInfo("hello.txt")
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    archive = tmp_path / "img.tar"
    with tarfile.open(archive, "w") as t:
        for name, blob in (("layer.tar", layer_bytes), ("config.json", config),
                           ("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["t:1"],
                                                          "Layers": ["layer.tar"]}]).encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(blob)
            t.addfile(ti, io.BytesIO(blob))
    img = corral.Image.from_oci_archive(archive, name="sdk-imported").build(client=client)
    assert img.object_id and img.name == "sdk-imported"
    img.delete(client=client)


def test_snapshot_and_fork(client, requires):
    requires("snapshot")
    with corral.Sandbox.create(image="busybox", client=client) as sb:
        assert sb.exec("sh", "-c", "echo state > /root/s").wait() == 0
        img = sb.snapshot_filesystem(name="sdk-snap")
    sb.wait(raise_on_termination=False)
    assert img.object_id and img.name == "sdk-snap"
    forks = [corral.Sandbox.create(image=img, client=client) for _ in range(3)]
    try:
        for f in forks:
            assert f.exec("cat", "/root/s").stdout.read() == "state\n"
    finally:
        for f in forks:
            f.terminate()
            f.wait(raise_on_termination=False)
    img.delete(client=client)


def test_delete_in_use_refused(client, requires):
    requires("images")
    with corral.Sandbox.create(image="busybox", client=client):
        with pytest.raises(corral.Error):
            corral.Image.from_name("busybox", client=client).delete()
