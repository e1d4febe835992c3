"""Errors the CLI turns into one line and exit status 2."""


class LoadTestError(Exception):
    """Bad input or an unusable target; the message is one line naming the cause."""


class TargetUnreachable(LoadTestError):
    """A target did not accept a connection in time."""
