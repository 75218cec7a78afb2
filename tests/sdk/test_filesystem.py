"""sb.filesystem and Modal's ls/mkdir/rm (skipped, with the reason, while the daemon lacks them)."""
import os

import pytest

import corral


@pytest.fixture
def fsb(client, requires):
    requires("filesystem")
    s = corral.Sandbox.create(image="busybox", client=client)
    yield s
    s.terminate()


def test_write_read_text_bytes(fsb):
    fs = fsb.filesystem
    assert fs.write_text("/tmp/d/hello.txt", "héllo\n") == len("héllo\n".encode())
    assert fs.read_text("/tmp/d/hello.txt") == "héllo\n"
    big = os.urandom(5 << 20)  # several WriteFile messages and ReadFile chunks
    fs.write_bytes("/tmp/d/big.bin", big, mode=0o600)
    assert fs.read_bytes("/tmp/d/big.bin") == big
    st = fs.stat("/tmp/d/big.bin")
    assert (st.size, st.mode & 0o777, st.type) == (len(big), 0o600, corral.FileType.FILE)
    p = fsb.exec("cat", "/tmp/d/hello.txt")  # the sandbox's processes see the same file
    assert p.stdout.read() == "héllo\n"


def test_list_stat_mkdir_remove(fsb):
    fs = fsb.filesystem
    fs.make_directory("/tmp/a/b/c")
    fs.write_text("/tmp/a/f", "x")
    assert sorted(e.path for e in fs.list_files("/tmp/a")) == ["/tmp/a/b", "/tmp/a/f"]
    assert fs.stat("/tmp/a/b").is_dir and fs.exists("/tmp/a/f")
    assert sorted(fsb.ls("/tmp/a")) == ["b", "f"]
    with pytest.raises(corral.Error):
        fs.remove("/tmp/a/b")  # not empty, not recursive
    fs.remove("/tmp/a/b", recursive=True)
    fsb.rm("/tmp/a/f")
    assert fsb.ls("/tmp/a") == []
    fsb.mkdir("/tmp/m")
    assert fs.stat("/tmp/m").is_dir


def test_errors(fsb):
    fs = fsb.filesystem
    with pytest.raises(corral.NotFoundError):
        fs.read_text("/no/such/file")
    with pytest.raises(corral.InvalidError):
        fs.read_text("relative/path")
    with pytest.raises(corral.NotFoundError):
        fs.stat("/nope")


def test_copy_local_roundtrip(fsb, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.bin").write_bytes(b"\x00B")
    fsb.filesystem.copy_from_local(src, "/tmp/copied")
    fsb.filesystem.copy_from_local(src / "a.txt", "/tmp/single.txt")
    assert fsb.filesystem.read_text("/tmp/single.txt") == "A"
    dst = tmp_path / "dst"
    fsb.filesystem.copy_to_local("/tmp/copied", dst)
    assert (dst / "a.txt").read_text() == "A" and (dst / "sub" / "b.bin").read_bytes() == b"\x00B"
    fsb.filesystem.copy_to_local("/tmp/single.txt", tmp_path / "one.txt")
    assert (tmp_path / "one.txt").read_text() == "A"
