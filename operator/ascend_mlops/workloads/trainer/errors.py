"""Errors that end a training run with a documented, permanent exit code."""

from __future__ import annotations

from ascend_mlops.api import contract


class TrainerError(Exception):
    """An error the user must fix; running again cannot help (not retried by the operator)."""

    exit_code: int = contract.EXIT_INVALID_PARAMETERS


class DatasetError(TrainerError):
    """Missing or empty dataset, a class without images, fewer than two classes."""

    exit_code = contract.EXIT_INVALID_DATASET


class ParameterError(TrainerError):
    """Unknown or invalid hyperparameter, algorithm, train ratio, weights file or output."""

    exit_code = contract.EXIT_INVALID_PARAMETERS


class StorageFailure(TrainerError):
    """Object storage refused (permanent: the input's own code) or could not be reached (retryable 75)."""

    def __init__(self, message: str, exit_code: int, storage: dict[str, str]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.storage = storage


class Terminated(Exception):  # noqa: N818 - a signal, not an error of the run
    """SIGTERM arrived (pod deletion, deadline); the run stops and cleans up."""

    exit_code = 128 + 15


class StopRequest:
    """SIGTERM during the step loop is deferred to the next step boundary: an exception raised from a
    signal handler in the middle of TensorFlow and tf.data calls can corrupt their state on the way out."""

    def __init__(self) -> None:
        self.deferring = False
        self.requested = False

    def check(self) -> None:
        if self.requested:
            raise Terminated("received SIGTERM")


STOP = StopRequest()
