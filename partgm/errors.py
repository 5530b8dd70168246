"""The one exception type users see: a clear, one-line message naming the problem."""


class PartgmError(Exception):
    """A user-facing error. The CLI prints ``error: <message>`` and exits with status 2."""
