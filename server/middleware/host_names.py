"""The names this server answers to (the DNS-rebinding guard's list, ``security.TrustedHostMiddleware``).

A page on ``evil.example`` can re-point its own name at the classroom server's address (DNS rebinding) and
then read and write it as if it were its own origin; what gives it away is the ``Host`` header, which still
says ``evil.example``. So a request is answered only under a name this machine really has:

- loopback names (``localhost``, ``*.localhost``);
- any IP address: rebinding needs a *name* the attacker controls, and a browser sends an address as Host
  only when it connected to that address, which then is this server (directly, or through a port
  forward or a container's published port: so a laptop that joins the classroom Wi-Fi after the server
  started, or a Docker container, which does not see the host's addresses, still works);
- this machine's host names: ``socket.gethostname()``, its fully qualified name, and ``<hostname>.local``
  (mDNS, as macOS and Avahi announce it);
- the host of ``CONVSCOPE_PUBLIC_URL``, and every entry of ``CONVSCOPE_ALLOWED_HOSTS`` (names or addresses,
  ``*.domain`` for subdomains, ``*`` for any name).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from server.hosts import is_loopback

# host[:port] as HTTP allows it: a bracketed IPv6 literal or a name/IPv4 (no "@", "/", spaces), an optional port
_HOST = re.compile(r"^(?:\[(?P<ipv6>[0-9a-z:.%_-]+)\]|(?P<name>[^:\[\]@/\\\s]+))(?::\d{1,5})?$")


def host_name(host_header: str) -> str:
    """``Host`` without its port, lower case; IPv6 literals without brackets. Anything that is not
    ``host[:port]`` comes back whole, so it matches no allowed name ("127.0.0.1:80@evil.example")."""
    host = host_header.strip().lower()
    match = _HOST.match(host)
    if match is None:
        return host
    return match["ipv6"] if match["ipv6"] is not None else match["name"].rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


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


class HostAllowList:
    """Which ``Host`` names are answered (see the module's docstring)."""

    def __init__(self, configured: Iterable[str] = (), public_url: str | None = None,
                 names: Iterable[str] | None = None) -> None:
        patterns = [host_name(name) if name != "*" else "*" for name in configured]
        if public_url and (public := urlsplit(public_url).hostname):
            patterns.append(public.lower())
        self.any = "*" in patterns
        self.exact = frozenset(p for p in patterns if not p.startswith("*."))
        self.suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))
        self.names = frozenset(machine_host_names() if names is None else names)

    def permits(self, host: str, server: tuple | None = None) -> bool:
        """Whether ``host`` (already :func:`host_name`-normalised) is one of this server's names; ``server``:
        the (address, port) the connection came in on (ASGI's ``scope["server"]``)."""
        if self.any or is_loopback(host) or _is_ip(host) or host in self.exact or host in self.names:
            return True
        if any(host.endswith(suffix) for suffix in self.suffixes):
            return True
        return bool(server) and host == str(server[0]).lower()  # the name the client reached (test harnesses)
