"""The names this server answers to (the DNS-rebinding guard's list, ``security.TrustedHostMiddleware``).

A page on ``evil.example`` can re-point its own name at the classroom server's address (DNS rebinding) and
then read and write it as if it were its own origin; what gives it away is the ``Host`` header, which still
says ``evil.example``. So a request is answered only under a name this machine really has:

- loopback names (``localhost``, ``127.0.0.1``, ``::1``);
- the address the connection came in on, and every address of this machine's network interfaces (read
  again, at most every ``refresh_s`` seconds, when an unknown address is asked for: a laptop that joins the
  classroom Wi-Fi after the server started gets a new one);
- this machine's host names: ``socket.gethostname()``, its fully qualified name, and ``<hostname>.local``
  (mDNS, as macOS and Avahi announce it);
- the host of ``CONVSCOPE_PUBLIC_URL``, and every entry of ``CONVSCOPE_ALLOWED_HOSTS`` (names or addresses,
  ``*.domain`` for subdomains, ``*`` for any name).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

import psutil

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(host_header: str) -> str:
    """``Host`` without its port, lower case; IPv6 literals without brackets."""
    host = host_header.strip().lower().rstrip(".")
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _canonical_ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        return None


def machine_host_names() -> set[str]:
    """This machine's own names (lower case): its host name, its FQDN, and ``<hostname>.local``."""
    names: set[str] = set()
    try:
        hostname = socket.gethostname().lower().rstrip(".")
    except OSError:
        return names
    if hostname:
        short = hostname.split(".", 1)[0]
        names |= {hostname, short, f"{short}.local"}
    try:
        fqdn = socket.getfqdn().lower().rstrip(".")
        if fqdn:
            names.add(fqdn)
    except OSError:
        pass
    return names


def interface_addresses() -> set[str]:
    """Every IPv4 and IPv6 address of this machine's network interfaces (canonical text, no zone)."""
    addresses: set[str] = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                ip = _canonical_ip(entry.address)
                if ip:
                    addresses.add(ip)
    return addresses


class HostAllowList:
    """Which ``Host`` names are answered (see the module's docstring)."""

    def __init__(self, configured: Iterable[str] = (), public_url: str | None = None, refresh_s: float = 30.0,
                 names: Iterable[str] | None = None) -> None:
        patterns = [host_name(name) if name != "*" else "*" for name in configured]
        if public_url and (public := urlsplit(public_url).hostname):
            patterns.append(public.lower())
        self.any = "*" in patterns
        self.exact = frozenset(p for p in patterns if not p.startswith("*."))
        self.suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))
        self.names = frozenset(machine_host_names() if names is None else names)
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._addresses: frozenset[str] = frozenset()
        self._read_at = -float("inf")

    def _addresses_now(self, force: bool) -> frozenset[str]:
        with self._lock:
            if force and time.monotonic() - self._read_at >= self.refresh_s:
                try:
                    self._addresses = frozenset(interface_addresses())
                except OSError:
                    pass
                self._read_at = time.monotonic()
            return self._addresses

    def permits(self, host: str, server: tuple | None = None) -> bool:
        """Whether ``host`` (already :func:`host_name`-normalised) is one of this server's names; ``server``:
        the (address, port) the connection came in on (ASGI's ``scope["server"]``)."""
        if self.any or is_loopback(host) or host in self.exact or host in self.names:
            return True
        if any(host.endswith(suffix) for suffix in self.suffixes):
            return True
        if server and host == str(server[0]).lower():
            return True  # the very address the client reached (or the test harness's name)
        ip = _canonical_ip(host)
        if ip is None:
            return False
        if server and ip == _canonical_ip(str(server[0])):
            return True
        return ip in self._addresses_now(False) or ip in self._addresses_now(True)
