"""The filesystem API (ReadFile, WriteFile, ListFiles, StatFile, MakeDirectory, RemovePath),
served by corral-init inside the sandbox: round trips, typed errors, atomic replace, large files
in bounded daemon memory, cancellation. Figures (throughput, latency) print with `pytest -s`."""
import os
import statistics
import threading
import time

import grpc
import pytest

import harness
from harness import RPC_TIMEOUT, asan, pb, run_exec, spb, vm_rss_kib

MiB = 1 << 20
# The daemon's fd table and memory are measured here: no sandboxes started ahead of demand.
DAEMON_ARGS = ["--pool-size", "0"]


def sh(stub, sid, script):
    out, err, status = run_exec(stub, sid, ["sh", "-c", script])
    assert status.exit_code == 0, (script, out, err, status)
    return out.decode()


def write_file(stub, sid, path, data, chunk=MiB, mode=0, make_parents=False, timeout=120):
    def messages():
        yield pb.WriteFileRequest(sandbox_id=sid, path=path, mode=mode, make_parents=make_parents,
                                  data=data[:chunk])
        for off in range(chunk, len(data), chunk):
            yield pb.WriteFileRequest(data=data[off:off + chunk])
    return stub.WriteFile(messages(), timeout=timeout)


def read_file(stub, sid, path, offset=0, length=0, timeout=120):
    info, parts, expect = None, [], offset
    for r in stub.ReadFile(pb.ReadFileRequest(sandbox_id=sid, path=path, offset=offset, length=length),
                           timeout=timeout):
        if r.HasField("info"):
            assert info is None, "info on more than one message"
            info = r.info
        assert r.offset == expect, (r.offset, expect)
        expect += len(r.data)
        parts.append(r.data)
    assert info is not None, "no message carried the FileInfo"
    return info, b"".join(parts)


def rpc_error(fn, *args, **kw):
    with pytest.raises(grpc.RpcError) as ei:
        r = fn(*args, **kw)
        if hasattr(r, "__iter__") and not isinstance(r, (bytes, str)):
            for _ in r:
                pass
    return ei.value


def fd_list(pid):
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return "\n".join(out)



class RssWatch:
    """Samples a process's VmRSS in a thread; .peak is the highest value seen (KiB)."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, vm_rss_kib(pid), threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, vm_rss_kib(self.pid))
            time.sleep(0.01)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.t.join()


def test_write_read_roundtrip_binary(stub, sandbox):
    sid = sandbox.sandbox_id
    data = bytes(range(256)) * 4096 + os.urandom(3 * MiB + 17)
    r = write_file(stub, sid, "/data.bin", data, chunk=300000)
    assert r.bytes_written == len(data)
    info, back = read_file(stub, sid, "/data.bin")
    assert back == data
    assert info.type == pb.FILE_TYPE_REGULAR and info.size == len(data) and info.mode == 0o644
    assert info.name == "/data.bin"
    # The file is really the sandbox's: its own tools see the same bytes.
    import hashlib
    assert sh(stub, sid, "md5sum /data.bin").split()[0] == hashlib.md5(data).hexdigest()
    # offset and length
    _, part = read_file(stub, sid, "/data.bin", offset=1000, length=5000)
    assert part == data[1000:6000]
    _, tail = read_file(stub, sid, "/data.bin", offset=len(data) - 3)
    assert tail == data[-3:]
    info, past = read_file(stub, sid, "/data.bin", offset=len(data) + 100)
    assert past == b"" and info.size == len(data)


def test_zero_byte_file_and_mode(stub, sandbox):
    sid = sandbox.sandbox_id
    assert write_file(stub, sid, "/empty", b"", mode=0o600).bytes_written == 0
    info, data = read_file(stub, sid, "/empty")
    assert data == b"" and info.size == 0 and info.mode == 0o600
    assert sh(stub, sid, "stat -c '%s %a %u' /empty").split() == ["0", "600", "0"]
    # replacing keeps the mode unless a new one is given
    write_file(stub, sid, "/empty", b"x")
    assert read_file(stub, sid, "/empty")[0].mode == 0o600
    write_file(stub, sid, "/empty", b"xy", mode=0o751)
    assert read_file(stub, sid, "/empty")[0].mode == 0o751


def test_make_parents(stub, sandbox):
    sid = sandbox.sandbox_id
    e = rpc_error(write_file, stub, sid, "/p1/p2/p3/f.txt", b"hi")
    assert e.code() == grpc.StatusCode.NOT_FOUND, e
    write_file(stub, sid, "/p1/p2/p3/f.txt", b"hi", make_parents=True)
    assert read_file(stub, sid, "/p1/p2/p3/f.txt")[1] == b"hi"
    names = [x.name for x in stub.ListFiles(pb.ListFilesRequest(sandbox_id=sid, path="/p1/p2/p3"),
                                            timeout=RPC_TIMEOUT).entries]
    assert names == ["f.txt"]
    st = stub.StatFile(pb.StatFileRequest(sandbox_id=sid, path="/p1/p2"), timeout=RPC_TIMEOUT).info
    assert st.type == pb.FILE_TYPE_DIRECTORY and st.mode == 0o755


def test_atomic_replace_concurrent_reader(stub, sandbox):
    """A reader never sees a half-written file while writers replace it over and over."""
    sid = sandbox.sandbox_id
    size = 2 * MiB
    write_file(stub, sid, "/atomic", b"A" * size)
    stop, bad, reads = threading.Event(), [], [0]

    def reader():
        while not stop.is_set():
            try:
                _, d = read_file(stub, sid, "/atomic")
            except grpc.RpcError as e:
                bad.append(f"read failed: {e}")
                return
            reads[0] += 1
            if len(d) != size or d.count(d[:1]) != size:
                bad.append(f"torn read: {len(d)} bytes, {d.count(b'A')} A, {d.count(b'B')} B")
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for i in range(40):
            write_file(stub, sid, "/atomic", (b"B" if i % 2 == 0 else b"A") * size, chunk=256 * 1024)
    finally:
        stop.set()
        t.join(60)
    assert not bad, bad
    assert reads[0] > 0
    # a reader inside the sandbox sees whole files too, and no temp files are left behind
    out = sh(stub, sid, "ls -a /; wc -c < /atomic")
    assert ".corral-write" not in out
    assert out.split()[-1] == str(size)


def test_stat_list_symlink(stub, sandbox):
    sid = sandbox.sandbox_id
    sh(stub, sid, "mkdir -p /ls/sub && echo -n 12345 > /ls/five && ln -s /etc/passwd /ls/link && mkfifo /ls/fifo")
    entries = stub.ListFiles(pb.ListFilesRequest(sandbox_id=sid, path="/ls"), timeout=RPC_TIMEOUT).entries
    by = {e.name: e for e in entries}
    assert [e.name for e in entries] == sorted(by)
    assert set(by) == {"sub", "five", "link", "fifo"}
    assert by["sub"].type == pb.FILE_TYPE_DIRECTORY
    assert by["five"].type == pb.FILE_TYPE_REGULAR and by["five"].size == 5
    assert by["link"].type == pb.FILE_TYPE_SYMLINK and by["link"].symlink_target == "/etc/passwd"
    assert by["fifo"].type == pb.FILE_TYPE_OTHER
    st = stub.StatFile(pb.StatFileRequest(sandbox_id=sid, path="/ls/link"), timeout=RPC_TIMEOUT).info
    assert st.type == pb.FILE_TYPE_SYMLINK and st.symlink_target == "/etc/passwd" and st.name == "/ls/link"
    assert st.modified_at_ms > 1600000000000
    st = stub.StatFile(pb.StatFileRequest(sandbox_id=sid, path="/"), timeout=RPC_TIMEOUT).info
    assert st.type == pb.FILE_TYPE_DIRECTORY
    # a final symlink is not followed by ReadFile
    e = rpc_error(read_file, stub, sid, "/ls/link")
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "symlink" in e.details(), e
    # but a directory reached through one lists fine
    sh(stub, sid, "ln -s /ls /ls2")
    assert len(stub.ListFiles(pb.ListFilesRequest(sandbox_id=sid, path="/ls2"), timeout=RPC_TIMEOUT).entries) == 4


def test_mkdir_and_remove(stub, sandbox):
    sid = sandbox.sandbox_id
    mk = lambda p, **kw: stub.MakeDirectory(pb.MakeDirectoryRequest(sandbox_id=sid, path=p, **kw), timeout=RPC_TIMEOUT)
    rm = lambda p, **kw: stub.RemovePath(pb.RemovePathRequest(sandbox_id=sid, path=p, **kw), timeout=RPC_TIMEOUT)
    mk("/m1")
    assert rpc_error(mk, "/m1").code() == grpc.StatusCode.ALREADY_EXISTS
    assert rpc_error(mk, "/x1/x2").code() == grpc.StatusCode.NOT_FOUND
    mk("/x1/x2/x3", parents=True, mode=0o700)
    mk("/x1/x2/x3", parents=True)  # like mkdir -p: exists is fine
    assert sh(stub, sid, "stat -c %a /x1/x2/x3").strip() == "700"
    write_file(stub, sid, "/x1/x2/x3/f", b"f")
    sh(stub, sid, "mkdir -p /x1/deep/a/b/c/d && touch /x1/deep/a/b/c/d/e && ln -s / /x1/deep/toroot")
    e = rpc_error(rm, "/x1")
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "not empty" in e.details(), e
    rm("/x1/x2/x3/f")
    rm("/x1", recursive=True)
    assert rpc_error(rm, "/x1").code() == grpc.StatusCode.NOT_FOUND
    # the symlink to / inside the removed tree was removed, not followed
    assert "bin" in sh(stub, sid, "ls /")
    e = rpc_error(rm, "/")
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e
    # removing a symlink removes the link only
    sh(stub, sid, "mkdir /keep && touch /keep/k && ln -s /keep /keeplink")
    rm("/keeplink", recursive=True)
    assert sh(stub, sid, "ls /keep").split() == ["k"]


def test_typed_errors(daemon, stub, sandbox):
    sid = sandbox.sandbox_id
    sh(stub, sid, "mkdir /dir && echo x > /file && mkfifo /fifo")
    cases = [
        (lambda: read_file(stub, sid, "/nope"), grpc.StatusCode.NOT_FOUND, "/nope"),
        (lambda: read_file(stub, sid, "/dir"), grpc.StatusCode.FAILED_PRECONDITION, "is a directory"),
        (lambda: read_file(stub, sid, "/file/x"), grpc.StatusCode.FAILED_PRECONDITION, "not a directory"),
        (lambda: read_file(stub, sid, "/fifo"), grpc.StatusCode.FAILED_PRECONDITION, "not a regular file"),
        (lambda: read_file(stub, sid, "relative"), grpc.StatusCode.INVALID_ARGUMENT, "absolute"),
        (lambda: read_file(stub, sid, ""), grpc.StatusCode.INVALID_ARGUMENT, "path"),
        (lambda: read_file(stub, "", "/x"), grpc.StatusCode.INVALID_ARGUMENT, "sandbox_id"),
        (lambda: read_file(stub, "sb-nonexistent", "/x"), grpc.StatusCode.NOT_FOUND, "sandbox"),
        (lambda: read_file(stub, sid, "/" + "a" * 5000), grpc.StatusCode.INVALID_ARGUMENT, "path"),
        (lambda: write_file(stub, sid, "/dir", b"x"), grpc.StatusCode.FAILED_PRECONDITION, "is a directory"),
        (lambda: write_file(stub, sid, "/x", b"x", mode=0o70000), grpc.StatusCode.INVALID_ARGUMENT, "mode"),
        (lambda: stub.RemovePath(pb.RemovePathRequest(sandbox_id=sid, path="/proc/1/environ"), timeout=RPC_TIMEOUT),
         grpc.StatusCode.PERMISSION_DENIED, "/proc/1/environ"),
        (lambda: stub.RemovePath(pb.RemovePathRequest(sandbox_id=sid, path="/"), timeout=RPC_TIMEOUT),
         grpc.StatusCode.PERMISSION_DENIED, "root"),
        (lambda: stub.WriteFile(iter([]), timeout=RPC_TIMEOUT), grpc.StatusCode.INVALID_ARGUMENT, "first message"),
        (lambda: stub.ListFiles(pb.ListFilesRequest(sandbox_id=sid, path="/file"), timeout=RPC_TIMEOUT),
         grpc.StatusCode.FAILED_PRECONDITION, "not a directory"),
        (lambda: stub.MakeDirectory(pb.MakeDirectoryRequest(sandbox_id=sid, path="/dir"), timeout=RPC_TIMEOUT),
         grpc.StatusCode.ALREADY_EXISTS, "exists"),
        (lambda: stub.StatFile(pb.StatFileRequest(sandbox_id=sid, path="/a/../b/.."), timeout=RPC_TIMEOUT),
         grpc.StatusCode.INVALID_ARGUMENT, ".."),
        (lambda: read_file(stub, sid, "/proc/1/environ"), grpc.StatusCode.FAILED_PRECONDITION, "pseudo file system"),
        (lambda: read_file(stub, sid, "/etc/passwd\x00.txt"), grpc.StatusCode.INVALID_ARGUMENT, "NUL"),
        (lambda: write_file(stub, sid, "/file\x00x", b"x"), grpc.StatusCode.INVALID_ARGUMENT, "NUL"),
        (lambda: stub.StatFile(pb.StatFileRequest(sandbox_id=sid + "\x00", path="/"), timeout=RPC_TIMEOUT),
         grpc.StatusCode.INVALID_ARGUMENT, "NUL"),
    ]
    for fn, code, text in cases:
        e = rpc_error(fn)
        assert e.code() == code and text in e.details(), (code, text, e.code(), e.details())
    # a later message may not switch paths
    def switch():
        yield pb.WriteFileRequest(sandbox_id=sid, path="/a1", data=b"1")
        yield pb.WriteFileRequest(path="/a2", data=b"2")
    e = rpc_error(stub.WriteFile, switch(), timeout=RPC_TIMEOUT)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    assert "a1" not in sh(stub, sid, "ls /")  # the failed write left nothing


def test_disk_limit_is_resource_exhausted(stub):
    sb = harness.create_sandbox(stub, resources=pb.Resources(disk_mib=8))
    try:
        e = rpc_error(write_file, stub, sb.sandbox_id, "/big", b"z" * (16 * MiB))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        assert "no space" in e.details().lower() or "disk" in e.details(), e
        # the partial temp file is gone: the space is free again
        write_file(stub, sb.sandbox_id, "/small", b"s" * MiB)
    finally:
        harness.terminate(stub, sb.sandbox_id)


def test_finished_sandbox_is_failed_precondition(stub):
    sb = harness.create_sandbox(stub)
    harness.terminate(stub, sb.sandbox_id)
    for fn in (lambda: read_file(stub, sb.sandbox_id, "/etc/passwd"),
               lambda: write_file(stub, sb.sandbox_id, "/x", b"x"),
               lambda: stub.StatFile(pb.StatFileRequest(sandbox_id=sb.sandbox_id, path="/"), timeout=RPC_TIMEOUT)):
        e = rpc_error(fn)
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "finished" in e.details(), e


def test_listing_is_bounded(stub, sandbox):
    sid = sandbox.sandbox_id
    sh(stub, sid, "mkdir /many && cd /many && seq 1 10001 | xargs touch")
    e = rpc_error(stub.ListFiles, pb.ListFilesRequest(sandbox_id=sid, path="/many"), timeout=RPC_TIMEOUT)
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "10000" in e.details(), e
    sh(stub, sid, "rm /many/1")
    n = len(stub.ListFiles(pb.ListFilesRequest(sandbox_id=sid, path="/many"), timeout=RPC_TIMEOUT).entries)
    assert n == 10000


@pytest.mark.timeout(300)
def test_one_gib_streams_in_bounded_memory(daemon, stub, sandbox):
    sid = sandbox.sandbox_id
    chunk = os.urandom(MiB)

    def messages():
        yield pb.WriteFileRequest(sandbox_id=sid, path="/gig", data=chunk)
        for _ in range(1023):
            yield pb.WriteFileRequest(data=chunk)

    base = vm_rss_kib(daemon.pid)
    with RssWatch(daemon.pid) as w:
        t = time.monotonic()
        r = stub.WriteFile(messages(), timeout=240)
        wt = time.monotonic() - t
        assert r.bytes_written == 1 << 30
        t = time.monotonic()
        n = 0
        for m in stub.ReadFile(pb.ReadFileRequest(sandbox_id=sid, path="/gig"), timeout=240):
            o = m.offset % MiB
            assert m.data == chunk[o:o + len(m.data)], m.offset
            n += len(m.data)
        rt = time.monotonic() - t
    assert n == 1 << 30
    growth = (w.peak - base) / 1024
    print(f"\n1 GiB: write {1024 / wt:.0f} MiB/s, read {1024 / rt:.0f} MiB/s, daemon VmRSS {base // 1024} MiB "
          f"-> peak {w.peak // 1024} MiB")
    if not asan(daemon.pid):  # ASan's quarantine keeps freed chunks: RSS says nothing there
        assert growth < 48, f"daemon RSS grew by {growth:.0f} MiB while streaming 1 GiB"
    stub.RemovePath(pb.RemovePathRequest(sandbox_id=sid, path="/gig"), timeout=RPC_TIMEOUT)


def test_cancel_read_midway(daemon, stub, sandbox):
    sid = sandbox.sandbox_id
    sh(stub, sid, "truncate -s 1099511627776 /sparse")
    fds = daemon.fd_count()
    base = vm_rss_kib(daemon.pid)
    call = stub.ReadFile(pb.ReadFileRequest(sandbox_id=sid, path="/sparse"), timeout=60)
    got = 0
    for m in call:
        if m.HasField("info"):
            assert m.info.size == 1 << 40
        got += len(m.data)
        if got >= 64 * MiB:
            break
    call.cancel()
    # The daemon stops reading and lets go of the file. (GetInfo on the same channel also drives
    # the client's I/O: a sync grpcio channel sends the RST_STREAM only while someone polls it.)
    t0 = time.monotonic()
    while daemon.fd_count() > fds and time.monotonic() < t0 + 10:
        assert daemon.sys.GetInfo(spb.GetInfoRequest(), timeout=5).version
        time.sleep(0.01)
    print("released after %.3f s" % (time.monotonic() - t0))
    assert daemon.fd_count() <= fds, fd_list(daemon.pid)
    assert asan(daemon.pid) or vm_rss_kib(daemon.pid) - base < 32 * 1024
    # and serves the next call normally
    assert read_file(stub, sid, "/sparse", offset=(1 << 40) - 2)[1] == b"\0\0"


def test_throughput_and_latency(stub, sandbox):
    """Figures for the README: 100 MiB each way, and small-file write latency."""
    sid = sandbox.sandbox_id
    data = os.urandom(100 * MiB)
    t = time.monotonic()
    write_file(stub, sid, "/hundred", data, chunk=MiB)
    wt = time.monotonic() - t
    t = time.monotonic()
    _, back = read_file(stub, sid, "/hundred")
    rt = time.monotonic() - t
    assert back == data
    lat = []
    for i in range(200):
        t = time.monotonic()
        write_file(stub, sid, f"/small-{i % 10}", b"x" * 100)
        lat.append((time.monotonic() - t) * 1000)
    rlat = []
    for i in range(200):
        t = time.monotonic()
        read_file(stub, sid, f"/small-{i % 10}")
        rlat.append((time.monotonic() - t) * 1000)
    lat.sort()
    rlat.sort()
    print(f"\n100 MiB: WriteFile {100 / wt:.0f} MiB/s, ReadFile {100 / rt:.0f} MiB/s; 100-byte WriteFile "
          f"median {statistics.median(lat):.2f} ms p99 {lat[197]:.2f} ms; ReadFile median "
          f"{statistics.median(rlat):.2f} ms p99 {rlat[197]:.2f} ms")
