"""Peer media addresses as the core sees them: the text ``HOST:PORT``.

IPv6 hosts are written in brackets (``[::1]:4000``), as in URLs, so the last
colon always separates the port.
"""

from __future__ import annotations

import ipaddress

MAX_PORT = 65535


class AddressError(ValueError):
    """A media address that cannot be used, with the reason in its message."""


def parse_address(text: str, *, any_port: bool = False) -> tuple[str, int]:
    """``"127.0.0.1:4000"`` → ``("127.0.0.1", 4000)``; ``"[::1]:4000"`` → ``("::1", 4000)``.

    Only numeric IP addresses are accepted: a media address comes from the
    network or a roster, and resolving names there would block and leak.
    ``any_port`` also accepts port 0, which asks the kernel for a free port.
    """
    host, separator, port_text = text.rpartition(":")
    if not separator or not host:
        raise AddressError(f"address {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        version = 6
    else:
        version = 4
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(f"address {text!r}: {host!r} is not a numeric IP address") from None
    if parsed.version != version:
        hint = "IPv6 hosts go in brackets, e.g. [::1]:4000"
        raise AddressError(f"address {text!r}: {hint}")
    lowest = 0 if any_port else 1
    # ASCII digits only, and few of them: str.isdigit() also accepts digits that int()
    # refuses ("²") and runs too long to convert.
    digits = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    if not digits or not lowest <= int(port_text) <= MAX_PORT:
        raise AddressError(f"address {text!r}: port must be {lowest}..{MAX_PORT}")
    return str(parsed), int(port_text)


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`, for a numeric host (as sockets report them)."""
    if ":" in host:  # only IPv6 numeric addresses contain colons
        return f"[{host}]:{port}"
    return f"{host}:{port}"
