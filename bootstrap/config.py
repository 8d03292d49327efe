"""A bootstrap node's connection limits (kept apart so that declaring options stays cheap)."""

from __future__ import annotations

import attrs


@attrs.frozen
class BootstrapConfig:
    max_connections: int = 4096
    """Open connections in total; more are refused with HTTP 503."""
    max_connections_per_ip: int = 32
    """Open connections from one source IP; more are refused with HTTP 503."""
    idle_timeout: float = 60.0
    """Seconds a connection may stay silent before the node closes it."""
    handshake_timeout: float = 5.0
    """Seconds a client has to complete the websocket opening handshake."""
    send_timeout: float = 10.0
    """Seconds a reply may take to send before the node gives up on the client."""
    close_timeout: float = 1.0
    """Seconds to wait for the client's side of a closing handshake."""
    request_rate: float = 5.0
    """Requests per second one connection may sustain."""
    request_burst: int = 20
    """Requests one connection may send at once after being quiet."""
    expire_interval: float = 30.0
    """Seconds between sweeps that drop expired announcements."""
