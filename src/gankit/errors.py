"""The user-facing exception types; cli.main turns each into one line and its exit status."""


class GankitError(Exception):
    """An error the user can fix: bad input, a missing file, a flag out of range.

    The message must say what is wrong, name the file or flag, and say what to do.
    """

    exit_code = 1  # the process's exit status when this error ends a command
    # Under torchrun: every process raises it together (rank 0 reports it) rather than one alone.
    every_process = False


class DataError(GankitError):
    """A dataset could not be found or read."""


class ConfigError(GankitError):
    """A flag or config value is invalid."""


class CheckpointError(GankitError):
    """A checkpoint is missing, corrupt, or does not match the run."""


class TrainingDiverged(GankitError):
    """A loss or gradient became NaN or Inf."""

    every_process = True  # the statistics are shared after an all-reduce: every rank sees it


class TrainingInterrupted(GankitError):
    """SIGINT or SIGTERM: a checkpoint was saved and training stopped cleanly."""

    every_process = True

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code  # 128 + the signal's number, as a shell reports it
