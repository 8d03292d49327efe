"""The ``lab`` fixture: five namespaces on one bridge, removed afterwards whatever happens."""

from __future__ import annotations

import pytest

from .netns_lab import LabUnavailable, NetnsLab, create_lab

LAB_HOSTS = 5


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> NetnsLab:
    """A fresh :class:`NetnsLab` of :data:`LAB_HOSTS` hosts.

    Skips, saying why, where namespaces can't be made.
    """
    try:
        made = create_lab(LAB_HOSTS)
    except LabUnavailable as exc:
        pytest.skip(f"the LAN lab can't run here: {exc}")
    request.addfinalizer(made.close)
    return made
