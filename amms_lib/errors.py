"""One exception type for mistakes a user can fix (bad path, bad scale, bad file).

Command-line entry points catch it and print its message as one line, without a traceback.
"""


class AmmsError(Exception):
    """A user-facing error: the message says what was wrong and what to do."""
