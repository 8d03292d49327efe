"""The ``mitalk demo`` walkthrough runs the real control plane and ends converged."""

from __future__ import annotations

import base64
import io

import pytest

from mitalk_p2p import walkthrough
from mitalk_p2p.core.identity import Identity


def test_walkthrough_tells_the_whole_story_and_converges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[Identity] = []
    original = Identity.generate.__func__  # type: ignore[attr-defined]

    def recording_generate(cls: type[Identity], display_name: str) -> Identity:
        identity: Identity = original(cls, display_name)
        created.append(identity)
        return identity

    monkeypatch.setattr(Identity, "generate", classmethod(recording_generate))
    out = io.StringIO()
    assert walkthrough.run(out) == 0
    text = out.getvalue()
    for expected in (
        "join refused (wrong-audience)",
        "hand queue seen by the moderator: ['bob', 'dan']",
        "bob: accept-stage",
        "join refused (banned)",
        "{'forged': 1}",
        "term 2.0 begins; cat now moderates",
        "moderator(s) ['cat']",
        "dropped it unplayed: not-on-floor x4",
        "they open 0 of the new frames",
    ):
        assert expected in text, expected
    assert len(created) == 6 + 1 + 24  # the control tour, then the audio tour's host and guests
    for identity in created:
        seed = identity.secret_seed()
        for form in (seed.hex(), base64.b64encode(seed).decode(), base64.b32encode(seed).decode()):
            assert form not in text
