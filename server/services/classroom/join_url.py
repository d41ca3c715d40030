"""The address students can reach: what the join URL and its QR code point at.

In order: ``CONVSCOPE_PUBLIC_URL`` when set (behind a proxy, or a name the class knows); else the address
the teacher's own browser used (the request's Host), except that a loopback name (``localhost``,
``127.0.0.1``) means nothing on a student's laptop, so when the server listens beyond loopback
(``--host 0.0.0.0``) it is replaced by this machine's LAN address.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from server.hosts import is_loopback


@dataclass(frozen=True)
class JoinBase:
    url: str  # scheme://host[:port], no trailing slash
    warning: str | None  # why students may not reach it, when we know


def lan_address() -> str | None:
    """This machine's address on its LAN (IPv4), found without sending a packet; None when offline."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface, sends nothing
            address = sock.getsockname()[0]
            if not is_loopback(address):
                return address
    except OSError:
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            address = str(info[4][0])
            if not is_loopback(address):
                return address
    except OSError:
        pass
    return None


def join_base(scheme: str, host_header: str | None, bind_host: str, public_url: str | None) -> JoinBase:
    if public_url:
        return JoinBase(public_url.rstrip("/"), None)
    netloc = host_header or "localhost"
    parts = urlsplit(f"//{netloc}")
    hostname = parts.hostname or "localhost"
    port = parts.port
    if not is_loopback(hostname):
        return JoinBase(f"{scheme}://{netloc}", None)
    if is_loopback(bind_host):
        return JoinBase(f"{scheme}://{netloc}", (
            "The server only listens on this computer (127.0.0.1), so students' laptops cannot reach it. "
            "Restart it with --host 0.0.0.0 to run a class."))
    address = lan_address()
    if address is None:
        return JoinBase(f"{scheme}://{netloc}", (
            "This computer's network address could not be found; students need this server's address on "
            "your network (or set CONVSCOPE_PUBLIC_URL)."))
    return JoinBase(f"{scheme}://{address}{f':{port}' if port else ''}", None)
