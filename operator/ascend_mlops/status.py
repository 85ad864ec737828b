"""Status helpers: metav1.Condition lists, kstatus summary conditions, change detection.

Conditions follow the Kubernetes API conventions: a list keyed by `type`, each
with `status` (True/False/Unknown), a CamelCase `reason`, a `message`,
`lastTransitionTime` (changes only when `status` changes) and
`observedGeneration`. Every kind carries its summary condition (`Succeeded` or
`Ready`) plus kstatus' `Reconciling` / `Stalled`, so `kubectl wait`, Flux and
Argo CD can read it without knowing the kind.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ascend_mlops.api.constants import ConditionType, Reason

TRUE: Final = "True"
FALSE: Final = "False"
UNKNOWN: Final = "Unknown"

# Kubernetes keeps condition messages short; a long ATC log belongs in status.logTail.
MESSAGE_LIMIT: Final = 1024


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def timestamp(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes it."""
    return moment.astimezone(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: object) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def shorten(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """Keep the end of a long message: errors put the cause last."""
    message = message.strip()
    return message if len(message) <= limit else "…" + message[-(limit - 1) :]


def get_condition(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for condition in (status or {}).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return None


def condition_is(status: Mapping[str, Any] | None, type_: str, value: str) -> bool:
    condition = get_condition(status, type_)
    return condition is not None and condition.get("status") == value


class Conditions:
    """An editable copy of a status' conditions at one generation and one moment."""

    def __init__(
        self,
        existing: Iterable[Mapping[str, Any]] | None,
        generation: int | None,
        moment: datetime.datetime,
    ) -> None:
        self._items: list[dict[str, Any]] = [
            dict(c) for c in (existing or []) if isinstance(c, Mapping) and c.get("type")
        ]
        self._generation = generation
        self._time = timestamp(moment)

    def set(self, type_: str, status: str, reason: str, message: str = "") -> None:
        if status not in (TRUE, FALSE, UNKNOWN):
            raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
        if not reason or not reason[0].isupper():
            raise ValueError(f"condition reason must be CamelCase and non-empty, not {reason!r}")
        new: dict[str, Any] = {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": shorten(message),
            "lastTransitionTime": self._time,
        }
        if self._generation is not None:
            new["observedGeneration"] = self._generation
        for index, old in enumerate(self._items):
            if old.get("type") == type_:
                if old.get("status") == status and old.get("lastTransitionTime"):
                    new["lastTransitionTime"] = old["lastTransitionTime"]
                self._items[index] = new
                return
        self._items.append(new)

    def remove(self, type_: str) -> None:
        self._items = [c for c in self._items if c.get("type") != type_]

    def get(self, type_: str) -> Mapping[str, Any] | None:
        for item in self._items:
            if item.get("type") == type_:
                return item
        return None

    def to_list(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._items)


def set_kstatus(conditions: Conditions, *, reconciling: str | None, stalled: str | None, message: str = "") -> None:
    """Set kstatus' abnormal-true conditions: at most one of them is True.

    `reconciling`/`stalled` are the reasons when that condition holds; None sets it False.
    """
    if stalled:
        conditions.set(ConditionType.STALLED, TRUE, stalled, message)
        conditions.set(ConditionType.RECONCILING, FALSE, stalled, "")
    elif reconciling:
        conditions.set(ConditionType.RECONCILING, TRUE, reconciling, message)
        conditions.set(ConditionType.STALLED, FALSE, reconciling, "")
    else:
        conditions.set(ConditionType.RECONCILING, FALSE, Reason.RECONCILED, "")
        conditions.set(ConditionType.STALLED, FALSE, Reason.RECONCILED, "")


def _without_volatile(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if v is not None}


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    return _without_volatile(old or {}) != _without_volatile(new)


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge-patch body turning `old` into `new`: keys that went away (at any depth) become null."""
    return {"status": _merge_patch(old or {}, new)}


def _merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key in old:
        if key not in new:
            body[key] = None
    for key, value in new.items():
        before = old.get(key)
        if before == value:
            continue
        if isinstance(before, Mapping) and isinstance(value, Mapping):
            body[key] = _merge_patch(before, value)  # a merge patch merges objects: removals must be explicit
        else:
            body[key] = value
    return body


def transitions(old: Mapping[str, Any] | None, new: Mapping[str, Any], types: Iterable[str]) -> list[dict[str, Any]]:
    """Conditions of `types` whose status or reason changed from `old` to `new`."""
    changed: list[dict[str, Any]] = []
    for type_ in types:
        after = get_condition(new, type_)
        if after is None:
            continue
        before = get_condition(old, type_)
        if before is None or before.get("status") != after.get("status") or before.get("reason") != after.get("reason"):
            changed.append(dict(after))
    return changed
