#!/usr/bin/env python3
"""Opens COUNT keep-alive connections to 127.0.0.1:PORT, makes one request on each, then holds
them all open and idle until stdin closes. Prints "ready N" once all are open.

With --tls each connection is TLS (HTTP/1.1, no ALPN), the server's certificate not verified:
it is the benchmark's own, self-signed, on loopback.

    python3 benches/idle_connections.py [--tls] PORT COUNT
"""
import re
import resource
import socket
import ssl
import sys


def tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def one_request(conn: socket.socket, index: int) -> None:
    """A GET of /, read to the end of its body (by its Content-Length), leaving the connection
    idle and reusable."""
    conn.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    response = b""
    while True:
        head, end, body = response.partition(b"\r\n\r\n")
        if end:
            length = re.search(rb"(?im)^content-length:\s*(\d+)\r?$", head)
            if not length:
                raise SystemExit(f"connection {index}: a response without Content-Length: {head!r}")
            if len(body) >= int(length.group(1)):
                return
        chunk = conn.recv(4096)
        if not chunk:
            raise SystemExit(f"connection {index} closed early: {response!r}")
        response += chunk


def main() -> None:
    args = sys.argv[1:]
    tls = "--tls" in args
    port, count = (int(arg) for arg in args if arg != "--tls")
    # One descriptor per connection: the soft limit is often 1,024, the hard one higher.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    context = tls_context() if tls else None
    held = []
    for index in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        if context:
            conn = context.wrap_socket(conn)
        one_request(conn, index)
        held.append(conn)
    print(f"ready {len(held)}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
