"""Domain errors of the server, each carrying the HTTP status the REST layer returns."""

from __future__ import annotations


class ServerError(Exception):
    """Base class: `status` is the HTTP status code, the message goes to the JSON body."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServerError):
    status = 400


class UnsupportedMediaType(ServerError):
    status = 415


class PayloadTooLarge(ServerError):
    status = 413


class ClientClosed(ServerError):
    """The client went away before its request was read: nginx's 499, never a server error.

    Nothing is sent (there is nobody to send it to); the status only labels the
    request in the metrics and the log."""

    status = 499


class ModelNotFound(ServerError):
    status = 404


class ServerOverloaded(ServerError):
    """The batching queue is full; clients should retry after `retry_after` seconds."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelNotReady(ServerError):
    status = 503

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InferenceFailed(ServerError):
    """The backend failed on a well-formed request (a device or runtime error)."""

    status = 500


class ModelLoadError(Exception):
    """The model could not be loaded: a permanent problem with the model files or labels."""


class ToolkitMissing(Exception):
    """Neither the real pyACL nor (opted-in) simulator is available."""
