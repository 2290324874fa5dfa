"""The local runtime's private parts: timers, host-wide locks and per-job leadership.

Nothing here is public contract; :mod:`bgjobs.local` is.
"""
