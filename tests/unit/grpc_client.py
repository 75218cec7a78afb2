#!/usr/bin/python3
"""gRPC client half of tests/unit/test-grpc.c: drives corral's transport with unmodified grpcio.

Usage: grpc_client.py TARGET SCENARIO [ARG]
TARGET is "unix:/path" or "host:port"; SCENARIO names one of the functions below. Messages are
encoded by hand (the few fields used here), so no generated stubs are needed. Prints one line per
check ("ok ..." / "FAIL ...") and exits non-zero if any check failed.
"""
import os
import socket
import sys
import threading
import time

import grpc

FAILED = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    if not cond:
        FAILED.append(name)


# --- protobuf wire format, by hand ---------------------------------------------------------
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def parse(buf):
    """Top-level fields of a message: {number: [values]} (varints as int, the rest as bytes)."""
    fields, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        fields.setdefault(num, []).append(v)
    return fields


def read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def raw(x):
    return x


SANDBOX = "/corral.v1.SandboxService/"
SYSTEM = "/corral.v1.SystemService/"


def unary(ch, method, req, **kw):
    return ch.unary_unary(method, request_serializer=raw, response_deserializer=raw)(req, **kw)


def expect_error(name, fn, code, details_part=None):
    try:
        fn()
    except grpc.RpcError as e:
        ok = (code is None or e.code() == code) and (details_part is None or details_part in (e.details() or ""))
        check(name, ok, "%s %r" % (e.code(), e.details()))
        return e
    check(name, False, "no error")
    return None


def channel(target):
    # A generous receive limit: the stream test sends messages larger than nothing else does.
    return grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])


# --- scenarios ------------------------------------------------------------------------------
def s_unary(target, arg):
    with channel(target) as ch:
        info = parse(unary(ch, SYSTEM + "GetInfo", b""))
        check("GetInfo version", info.get(1) == [b"corral-test"], repr(info))
        name = "hello ✓ %d".encode() * 3
        resp = parse(unary(ch, SANDBOX + "GetSandbox", field_bytes(1, name)))
        sandbox = parse(resp[1][0])
        check("GetSandbox echoes sandbox_id", sandbox.get(1) == [name], repr(sandbox))
        # Many calls at once on one connection (multiplexed streams).
        futs = [ch.unary_unary(SANDBOX + "GetSandbox", request_serializer=raw, response_deserializer=raw)
                .future(field_bytes(1, "id-%d" % i)) for i in range(64)]
        good = all(parse(parse(f.result(timeout=10))[1][0])[1] == [("id-%d" % i).encode()]
                   for i, f in enumerate(futs))
        check("64 concurrent unary calls", good)
        expect_error("20 kB of metadata refused",
                     lambda: unary(ch, SYSTEM + "GetInfo", b"", metadata=[("x-big", "a" * 20000)], timeout=5),
                     None)
        resp = parse(unary(ch, SANDBOX + "WaitSandbox", field_bytes(1, "late"), timeout=10))
        check("finished later from a timer", resp.get(1) == [1], repr(resp))
        # A request body split over many DATA frames arrives whole.
        big = os.urandom(350 * 1024).hex().encode()
        resp = parse(unary(ch, SANDBOX + "GetSandbox", field_bytes(1, big)))
        check("700 KiB request in many DATA frames", parse(resp[1][0]).get(1) == [big])


def s_stream(target, arg):
    """ReadExecOutput with exec_id "N:S": N messages of S bytes, byte k of the stream is k % 251."""
    n, size = (int(x) for x in arg.split(":"))
    pattern = bytes(range(251)) * (size // 251 + 2)
    with channel(target) as ch:
        call = ch.unary_stream(SANDBOX + "ReadExecOutput", request_serializer=raw, response_deserializer=raw)
        total, good, last_eof = 0, True, False
        for msg in call(field_bytes(2, arg), timeout=60):
            f = parse(msg)
            off = f.get(1, [0])[0]
            data = f.get(2, [b""])[0]
            if off != total or data != pattern[off % 251:off % 251 + size]:
                good = False
            total += len(data)
            last_eof = f.get(3, [0])[0] == 1
        check("stream of %d x %d bytes intact" % (n, size), good and total == n * size and last_eof,
              "total=%d" % total)


def s_slow(target, arg):
    """A reader slower than the server: the socket backlog fills, the server must hold back."""
    n, size = (int(x) for x in arg.split(":"))
    with channel(target) as ch:
        call = ch.unary_stream(SANDBOX + "ReadExecOutput", request_serializer=raw, response_deserializer=raw)
        total, count = 0, 0
        for msg in call(field_bytes(2, arg), timeout=60):
            if count < 20:
                time.sleep(0.05)
            count += 1
            total += len(parse(msg).get(2, [b""])[0])
        check("slow reader got all %d bytes" % (n * size), total == n * size, "total=%d" % total)


def s_client_stream(target, arg):
    with channel(target) as ch:
        call = ch.stream_unary(SANDBOX + "WriteExecStdin", request_serializer=raw, response_deserializer=raw)
        sizes = [0, 1, 1000, 70000, 300000, 5]
        reqs = (field_varint(3, sum(sizes[:i])) + field_bytes(4, b"x" * s) for i, s in enumerate(sizes))
        resp = parse(call(reqs, timeout=10))
        check("client stream counted bytes", resp.get(1) == [sum(sizes)], repr(resp))


def s_errors(target, arg):
    with channel(target) as ch:
        e = expect_error("NOT_FOUND with encoded message",
                         lambda: unary(ch, SANDBOX + "TerminateSandbox", field_bytes(1, "x")),
                         grpc.StatusCode.NOT_FOUND)
        want = 'sandbox "x" is 100% gone: café ✓\tnext line\nend'
        if e is not None:
            check("grpc-message round trip", e.details() == want, repr(e.details()))
        expect_error("unknown method", lambda: unary(ch, "/corral.v1.Nope/Nope", b""),
                     grpc.StatusCode.UNIMPLEMENTED, "unknown method /corral.v1.Nope/Nope")
        expect_error("malformed request", lambda: unary(ch, SANDBOX + "GetSandbox", b"\x0a\x05ab"),
                     grpc.StatusCode.INVALID_ARGUMENT, "malformed request")
        expect_error("malformed wire type", lambda: unary(ch, SANDBOX + "GetSandbox", b"\x0f\xff\xff\xff"),
                     grpc.StatusCode.INVALID_ARGUMENT, "malformed request")
        t0 = time.monotonic()
        expect_error("oversized request", lambda: unary(ch, SANDBOX + "GetSandbox", field_bytes(1, b"y" * (8 << 20))),
                     grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max (8388613 vs. 1048576)")
        check("oversized answered fast", time.monotonic() - t0 < 5)
        two = ch.stream_unary(SANDBOX + "GetSandbox", request_serializer=raw, response_deserializer=raw)
        expect_error("unary with two messages", lambda: two(iter([b"", b""]), timeout=5),
                     grpc.StatusCode.INVALID_ARGUMENT, "more than one message")
        expect_error("unary with no message", lambda: two(iter([]), timeout=5),
                     grpc.StatusCode.INVALID_ARGUMENT, "got 0")
        # The connection survived all that.
        check("connection still usable", parse(unary(ch, SYSTEM + "GetInfo", b"")).get(1) == [b"corral-test"])
    opts = [("grpc.default_compression_algorithm", 2)]  # gzip: grpcio sets the flag byte to 1
    with grpc.insecure_channel(target, options=opts) as ch:
        expect_error("compressed message", lambda: unary(ch, SANDBOX + "GetSandbox", field_bytes(1, "z" * 1000)),
                     grpc.StatusCode.UNIMPLEMENTED, "compression not supported")


def s_deadline(target, arg):
    with channel(target) as ch:
        t0 = time.monotonic()
        expect_error("deadline", lambda: unary(ch, SANDBOX + "WaitExec", b"", timeout=0.3),
                     grpc.StatusCode.DEADLINE_EXCEEDED)
        check("deadline took about 0.3 s", 0.25 < time.monotonic() - t0 < 3, "%.3f" % (time.monotonic() - t0))
        wait_cancels(ch, 1)


def wait_cancels(ch, n):
    """The server's cancel callbacks counted so far, read over the same connection."""
    got = None
    for _ in range(100):
        got = parse(unary(ch, SYSTEM + "GetInfo", b"")).get(2, [b""])[0]
        if got == b"cancels=%d" % n:
            break
        time.sleep(0.05)
    check("server ran %d cancel callback(s)" % n, got == b"cancels=%d" % n, repr(got))


def s_cancel(target, arg):
    with channel(target) as ch:
        fut = ch.unary_unary(SANDBOX + "WaitExec", request_serializer=raw, response_deserializer=raw).future(b"")
        time.sleep(0.3)
        fut.cancel()
        check("client cancelled", fut.cancelled())
        wait_cancels(ch, 1)


def s_stream_cancel(target, arg):
    """Cancel a server stream that would never end, with output queued and backpressure on."""
    with channel(target) as ch:
        call = ch.unary_stream(SANDBOX + "ReadExecOutput", request_serializer=raw, response_deserializer=raw)
        it = call(field_bytes(2, "1000000:65536"))
        for _ in range(5):
            next(it)
        time.sleep(0.2)  # let the server fill its queue and wait for the window
        it.cancel()
        wait_cancels(ch, 1)


def s_close(target, arg):
    # The server closes itself from inside WaitExec's handler, while WaitSandbox's handler holds
    # its call for a timer that fires after the server is gone.
    with channel(target) as ch:
        late = ch.unary_unary(SANDBOX + "WaitSandbox", request_serializer=raw, response_deserializer=raw) \
            .future(field_varint(2, 400))
        time.sleep(0.1)
        try:
            unary(ch, SANDBOX + "WaitExec", b"", timeout=10)
            check("server close ends the call", False, "no error")
        except grpc.RpcError as e:
            check("server close ends the call", e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                                             grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN),
                  str(e.code()))
        try:
            late.result(timeout=10)
            check("server close ends the held call", False, "no error")
        except grpc.RpcError as e:
            check("server close ends the held call", e.code() == grpc.StatusCode.UNAVAILABLE, str(e.code()))


def s_tcp(target, token):
    with channel(target) as ch:
        expect_error("no token", lambda: unary(ch, SYSTEM + "GetInfo", b""), grpc.StatusCode.UNAUTHENTICATED)
        expect_error("wrong token",
                     lambda: unary(ch, SYSTEM + "GetInfo", b"", metadata=[("authorization", "Bearer " + token + "x")]),
                     grpc.StatusCode.UNAUTHENTICATED)
        expect_error("short token",
                     lambda: unary(ch, SYSTEM + "GetInfo", b"", metadata=[("authorization", "Bearer " + token[:-1])]),
                     grpc.StatusCode.UNAUTHENTICATED)
        resp = unary(ch, SYSTEM + "GetInfo", b"", metadata=[("authorization", "Bearer " + token)])
        check("right token", parse(resp).get(1) == [b"corral-test"])


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def raw_conn(target, payload, name):
    """Send bytes on a fresh connection; the server must hang up (EOF) rather than hang or crash."""
    path = target[len("unix:"):]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    closed = False
    try:
        if payload:
            s.sendall(payload)
        while True:
            d = s.recv(65536)
            if not d:
                closed = True
                break
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    except socket.timeout:
        pass
    s.close()
    check("server hung up on " + name, closed)


def s_garbage(target, arg):
    raw_conn(target, os.urandom(4096), "random bytes")
    raw_conn(target, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "an HTTP/1.1 request")
    raw_conn(target, PREFACE + b"\xff" * 64, "a bad frame after the preface")
    # HEADERS whose block is not valid HPACK.
    raw_conn(target, PREFACE + SETTINGS + b"\x00\x00\x04\x01\x05\x00\x00\x00\x01\xff\xff\xff\xff",
             "broken HPACK")
    # A frame longer than the default maximum frame size.
    raw_conn(target, PREFACE + SETTINGS + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01", "an oversized frame")
    # A CONTINUATION flood: HEADERS without END_HEADERS followed by endless CONTINUATIONs.
    hdr = b"\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82"
    cont = b"\x00\x00\x00\x09\x00\x00\x00\x00\x01"
    raw_conn(target, PREFACE + SETTINGS + hdr + cont * 200, "a CONTINUATION flood")
    # Half-open: connect, send half a preface, close.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(target[len("unix:"):])
    s.sendall(PREFACE[:10])
    s.close()
    # Many connections opened and dropped at once.
    socks = []
    for _ in range(50):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(target[len("unix:"):])
        socks.append(s)
    for s in socks:
        s.close()
    with channel(target) as ch:
        check("server still answers", parse(unary(ch, SYSTEM + "GetInfo", b"", timeout=5)).get(1) == [b"corral-test"])


def s_maxconn(target, arg):
    # The server allows 2 connections: the third is accepted and closed at once.
    socks = []
    for _ in range(2):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(target[len("unix:"):])
        socks.append(s)
    time.sleep(0.2)
    raw_conn(target, b"", "a connection over the limit")
    for s in socks:
        s.close()


def main():
    target, scenario = sys.argv[1], sys.argv[2]
    arg = sys.argv[3] if len(sys.argv) > 3 else ""
    globals()["s_" + scenario](target, arg)
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
