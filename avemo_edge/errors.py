"""Errors a user can cause and fix. Each message is one sentence naming the input and the problem.

Library code raises these; only `cli.py` turns them into an exit code.
"""


class AvemoError(Exception):
    """Base class: the CLI prints the message alone, without a traceback."""


class CheckpointError(AvemoError):
    """A checkpoint that cannot be read, was altered, or does not fit this runtime."""


class ExportError(AvemoError):
    """An export that cannot be made: an unknown format, a missing package, a graph a converter refuses."""


class ExportedModelError(AvemoError):
    """Exported graphs or engines with their manifest that are missing, altered, or do not fit this runtime."""


class RestartableError(AvemoError):
    """A failure of the running service that a restart may cure: printed as one sentence, exit status 1."""


class BackendError(RestartableError):
    """An inference backend that failed while running (a GPU execution provider that broke mid-stream)."""
