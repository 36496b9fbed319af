"""One exception type for user-facing errors.

Anything the user can fix (a bad config key, a missing file, a corrupt image)
raises `SemisegError` with a single line that names the file or key and the
fix. The CLI prints it as `error: ...` and exits with status 2, without a
traceback.
"""


class SemisegError(Exception):
    """A user-facing error: the message is one line naming what and how to fix."""
