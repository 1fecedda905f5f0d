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


def path_problem(path: object, want: str = "file") -> str | None:
    """What is wrong with `path` where a `want` ('file' or 'folder') is expected, as the end of a sentence.

    None when it is one; else "does not exist", "is a directory, not a file" or "is a file, not a folder".
    """
    import os

    p = os.fspath(path)  # type: ignore[call-overload]
    if not os.path.exists(p):
        return "does not exist"
    if want == "file" and os.path.isdir(p):
        return "is a directory, not a file"
    if want == "folder" and not os.path.isdir(p):
        return "is a file, not a folder"
    return None
