"""The sans-I/O core: protocol logic that never touches a socket, clock or RNG.

Time is passed in as ``now`` (seconds, float, any epoch the driver chooses);
randomness that is not key material is injected.  Key material and nonces come
from libsodium through PyNaCl.  ``tests/core/test_sans_io.py`` enforces the rule.
"""
