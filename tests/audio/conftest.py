"""Fixtures for the sound-device tests: the private PulseAudio server."""

from __future__ import annotations

from .pulse import pulse_server as pulse_server
