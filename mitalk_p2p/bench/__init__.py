"""``mitalk bench``: measured latency, CPU and bandwidth of real rooms, and simulator speed.

- :mod:`.fanout` conducts a real room on 127.0.0.1: a host and a speaker in
  this process, listeners in worker processes (:mod:`.worker`), and turns what
  they measured into one :class:`~.results.FanoutResult`.
- :mod:`.sim_bench` times a simulator scenario.
- :mod:`.stats` and :mod:`.results` hold the arithmetic and the printed table.

The figures and how to reproduce them are in BENCHMARKS.md.
"""
