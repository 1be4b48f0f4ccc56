"""The one exception type users see: a specific, one-line message and exit code 2."""


class NoisebenchError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    exit_code = 2


class DataError(NoisebenchError):
    """A dataset is missing, corrupt, or fails its checksum."""


class DataUnavailable(DataError):
    """A dataset is neither present locally nor downloadable."""


class StudyError(NoisebenchError):
    """A study file or option is invalid."""
