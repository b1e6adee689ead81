"""The project's exception tree. Every error the project raises on purpose derives from BulletError.

Each child names a boundary: a bad file (FormatError), a failed signature or unknown key
(TrustError), a request the daemon refuses (RequestError, carrying a stable wire code),
transports (TransportError) and the model runtime (ModelError, and its typed children for what a
caller asked of a model: BadSettings, BadPrompt, ContextOverflow). The runtime raises typed
errors only; wire codes are given at the daemon's edge (bulletd.daemon.protocol.wire_error).
"""


class BulletError(Exception):
    """Root of every error Bullet OS raises on purpose."""


class FormatError(BulletError):
    """A .bullet file (or a block inside it) is malformed. The message says what and where."""


class TrustError(BulletError):
    """A signature is missing, malformed, made by an unknown key, or does not match.

    `code` is a stable reason string: unsigned, bad_signature, unknown_key, hash_mismatch, ...
    """

    def __init__(self, message: str, code: str = "bad_signature"):
        super().__init__(message)
        self.code = code


class RequestError(BulletError):
    """A request cannot be served. `code` is the stable wire code (bad_request, unknown_child,
    busy, too_long, internal, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class TransportError(BulletError):
    """MQTT or Unix-socket transport failure (translated from the library's own errors)."""


class ModelError(BulletError):
    """The runtime cannot build or run a model (bad shapes, ids out of range, context full)."""


class BadSettings(ModelError):
    """A generation setting has the wrong type or lies outside its range. `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class BadPrompt(ModelError):
    """A prompt the model cannot take: not a string, or empty."""


class ContextOverflow(ModelError):
    """The prompt (or the positions asked for) do not fit the model's context."""


# ---------------------------------------------------------------------- for the command lines

EXIT_BROKEN_PIPE = 141   # what a shell reports for a tool ended by SIGPIPE (128 + 13)


def plain(exc: BaseException) -> str:
    """One line for a user, without the exception's class name: an OSError becomes
    "FILE: No such file or directory"; our own errors are already written for users."""
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else None
        return f"{where}: {exc.strerror}" if where is not None else exc.strerror
    return str(exc) or "failed without a message"


def stdout_gone() -> int:
    """The reader of standard output went away (`bullet inspect ... | head`): say nothing, like a
    Unix tool ended by SIGPIPE, and keep Python from reporting the same pipe again at exit."""
    import os
    import sys
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE
