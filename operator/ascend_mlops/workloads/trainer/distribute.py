"""Multi-worker training from `TF_CONFIG`: who we are, who writes the output."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from ascend_mlops.api import contract

from .errors import ParameterError


@dataclasses.dataclass(frozen=True)
class Cluster:
    num_workers: int
    task_type: str | None
    task_index: int
    has_chief: bool = False

    @property
    def multi_worker(self) -> bool:
        return self.num_workers > 1

    @property
    def is_chief(self) -> bool:
        """The chief writes the output: task "chief", or worker 0 when the cluster has no chief."""
        if self.task_type is None or self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_index == 0 and not self.has_chief

    def describe(self) -> str:
        if not self.multi_worker:
            return "single worker"
        role = "chief" if self.is_chief else "non-chief"
        return f"{self.task_type} {self.task_index} of {self.num_workers} workers ({role})"


def from_env(env: Mapping[str, str]) -> Cluster:
    raw = env.get(contract.ENV_TF_CONFIG, "").strip()
    if not raw:
        return Cluster(num_workers=1, task_type=None, task_index=0)
    try:
        config: Any = json.loads(raw)
        cluster = config.get("cluster", {})
        task = config.get("task", {})
        members = {kind: list(addresses) for kind, addresses in cluster.items()}
        task_type = str(task["type"])
        task_index = int(task.get("index", 0))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ParameterError(
            f"{contract.ENV_TF_CONFIG} is not valid: {exc}; expected "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
        ) from None
    if task_type not in ("chief", "worker"):
        raise ParameterError(
            f"{contract.ENV_TF_CONFIG}: task type {task_type!r} is not supported; "
            "MultiWorkerMirroredStrategy runs 'chief' and 'worker' tasks only"
        )
    if task_index < 0 or task_index >= len(members.get(task_type, [])):
        raise ParameterError(
            f"{contract.ENV_TF_CONFIG}: task {task_type} {task_index} is not in the cluster {members}"
        )
    num_workers = len(members.get("chief", [])) + len(members.get("worker", []))
    return Cluster(
        num_workers=num_workers,
        task_type=task_type,
        task_index=task_index,
        has_chief=bool(members.get("chief")),
    )
