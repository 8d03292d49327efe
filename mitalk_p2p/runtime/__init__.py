"""The trio runtime: the only package that owns sockets, clocks and threads.

It drives the same sans-I/O :mod:`mitalk_p2p.core` objects the simulator drives.
"""
