"""The one user-facing exception type; cli.main turns it into one line and exit status 1."""


class GankitError(Exception):
    """An error the user can fix: bad input, a missing file, a flag out of range.

    The message must say what is wrong, name the file or flag, and say what to do.
    """


class DataError(GankitError):
    """A dataset could not be found or read."""


class ConfigError(GankitError):
    """A flag or config value is invalid."""


class CheckpointError(GankitError):
    """A checkpoint is missing, corrupt, or does not match the run."""
