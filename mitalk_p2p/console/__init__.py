"""The interactive room console, without its I/O.

A person types commands, or a script file or piped stdin supplies the same
lines.  This package turns those lines into room operations
(:mod:`.commands`), renders what the person sees (:mod:`.status`) and turns the
core's events into log records and readable lines (:mod:`.event_log`).  It
never reads a terminal or a clock: the driver passes lines, state and ``now``
in and prints what comes back.
"""
