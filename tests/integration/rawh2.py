"""A minimal HTTP/2 (h2c, prior knowledge) gRPC caller, for what grpcio hides from a client.

grpcio enforces a call's deadline in the client itself, so a client-side DEADLINE_EXCEEDED says
nothing about the server. This sends one unary gRPC request with chosen headers over a raw unix
socket and reports when the *server* ended the stream (END_STREAM, RST_STREAM or GOAWAY).
Response header blocks are not decoded (no HPACK decoder): only frame types, flags and timing.
"""
import socket
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def _frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def _hpack_int(value, prefix_bits=7):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out = bytearray([limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman coding."""
    n, v = name.encode(), value.encode()
    return b"\x00" + _hpack_int(len(n)) + n + _hpack_int(len(v)) + v


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def unary_call(socket_path, method, message, extra_headers=(), wait_s=10.0):
    """Send one unary request; return (seconds until the server ended stream 1, how it ended).
    how is "end_stream", "rst_stream", "goaway", "closed" or "no_end" (nothing within wait_s)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    sock.settimeout(wait_s)
    headers = [(":method", "POST"), (":scheme", "http"), (":path", method),
               (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers"),
               *extra_headers]
    block = b"".join(_hpack_literal(k, v) for k, v in headers)
    body = b"\x00" + struct.pack(">I", len(message)) + message
    t0 = time.monotonic()
    sock.sendall(PREFACE + _frame(SETTINGS, 0, 0) + _frame(HEADERS, END_HEADERS, 1, block)
                 + _frame(DATA, END_STREAM, 1, body))
    try:
        while True:
            head = _recv_exact(sock, 9)
            if head is None:
                return time.monotonic() - t0, "closed"
            length = int.from_bytes(head[:3], "big")
            ftype, flags = head[3], head[4]
            stream = struct.unpack(">I", head[5:9])[0] & 0x7FFFFFFF
            payload = _recv_exact(sock, length) if length else b""
            if payload is None:
                return time.monotonic() - t0, "closed"
            if ftype == SETTINGS and not flags & ACK:
                sock.sendall(_frame(SETTINGS, ACK, 0))
            elif ftype == PING and not flags & ACK:
                sock.sendall(_frame(PING, ACK, 0, payload))
            elif ftype == GOAWAY:
                return time.monotonic() - t0, "goaway"
            elif stream == 1 and ftype == RST_STREAM:
                return time.monotonic() - t0, "rst_stream"
            elif stream == 1 and ftype in (DATA, HEADERS) and flags & END_STREAM:
                return time.monotonic() - t0, "end_stream"
    except socket.timeout:
        return time.monotonic() - t0, "no_end"
    finally:
        sock.close()
