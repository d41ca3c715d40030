"""The one loopback check: is a host name or address this computer? (The Host-header guard in
``server.middleware.security`` and the classroom's join URL both ask it.)"""

from __future__ import annotations

import ipaddress

# names that mean this computer wherever they are resolved (RFC 6761 reserves ``localhost`` and its subdomains)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """``host`` (a name or an address, IPv6 with or without brackets, any case) is a loopback one."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
