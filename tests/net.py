"""Loopback ports for the servers and containers tests start."""

from __future__ import annotations

import socket


def free_loopback_port() -> int:
    """A loopback TCP port free right now (the kernel picks it; the race is small)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
