"""Audio at the edges of a peer: mixing and levels (:mod:`.mixer`), sources and sinks."""
