"""hypothesis strategies shared by the parser tests."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a byte changed, bytes inserted, deleted or overwritten, or cut short."""
    how = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "overwrite"]))
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "insert":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    at = draw(st.integers(0, len(data) - 1))
    if how == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if how == "delete":
        return data[:at] + data[at + draw(st.integers(1, 8)) :]
    patch = draw(st.binary(min_size=1, max_size=8))
    return data[:at] + patch + data[at + len(patch) :]
