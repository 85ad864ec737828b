"""The job lifecycle's decisions without an API: the status each step writes, the reference rules,
and the Secret look-ups when the operator's RBAC forbids them."""

from __future__ import annotations

import datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ascend_mlops import status as st
from ascend_mlops.api.constants import ConditionType, Phase, Reason
from ascend_mlops.api.specs import StorageOptions, parse_storage_uri
from ascend_mlops.kube import ApiError
from ascend_mlops.reconcilers import credentials, jobs, lifecycle, references, serving
from ascend_mlops.reconcilers.engine import Engine, Key
from ascend_mlops.settings import Settings

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)


def fresh() -> tuple[dict[str, Any], st.Conditions]:
    return {}, st.Conditions([], 1, NOW)


def conditions_of(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


def test_an_invalid_spec_fails_and_stalls_naming_the_field() -> None:
    status, conditions = fresh()
    lifecycle.mark_invalid(status, conditions, "spec.workers: must be at least 1")
    found = conditions_of(status)
    assert status["phase"] == Phase.INVALID
    assert found[ConditionType.VALID] == ("False", Reason.INVALID_SPEC, "spec.workers: must be at least 1")
    assert found[ConditionType.SUCCEEDED][0] == "False"
    assert found[ConditionType.STALLED][:2] == ("True", Reason.INVALID_SPEC)
    assert found[ConditionType.RECONCILING][0] == "False"


@pytest.mark.parametrize("failed", [False, True])
def test_waiting_for_a_reference_reconciles_and_a_failed_one_stalls(failed: bool) -> None:
    status, conditions = fresh()
    lifecycle.mark_waiting(status, conditions, references.Waiting(Reason.WAITING_FOR_TRAINING_JOB, "waiting", failed))
    found = conditions_of(status)
    assert status["phase"] == Phase.WAITING
    assert found[ConditionType.SOURCE_READY] == ("False", Reason.WAITING_FOR_TRAINING_JOB, "waiting")
    assert found[ConditionType.SUCCEEDED][0] == ("False" if failed else "Unknown")
    assert found[ConditionType.STALLED][0] == ("True" if failed else "False")
    assert found[ConditionType.RECONCILING][0] == ("False" if failed else "True")


@pytest.mark.parametrize("state", [jobs.STATE_PENDING, jobs.STATE_RUNNING])
def test_an_active_job_says_running_or_not_with_the_kinds_note(state: str) -> None:
    status, conditions = fresh()
    outcome = jobs.JobOutcome(state, Reason.RUNNING, "1 pod(s) running (attempt 1)")
    lifecycle.mark_active(status, conditions, outcome, " (simulated)")
    found = conditions_of(status)
    running = state == jobs.STATE_RUNNING
    assert status["phase"] == (Phase.RUNNING if running else Phase.PENDING)
    assert found[ConditionType.RUNNING] == ("True" if running else "False", Reason.RUNNING, "1 pod(s) running (attempt 1) (simulated)")
    assert found[ConditionType.SUCCEEDED][0] == "Unknown"


def test_finishing_turns_restarting_off_and_stalls_only_a_failure() -> None:
    for succeeded in (True, False):
        status, conditions = fresh()
        conditions.set(ConditionType.RESTARTING, st.TRUE, Reason.POD_RESTARTED, "attempt 1 failed")
        lifecycle.mark_finished(status, conditions, NOW, succeeded, Reason.SUCCEEDED if succeeded else Reason.PERMANENT_ERROR, "done")
        found = conditions_of(status)
        assert status["completionTime"] == st.timestamp(NOW)
        assert lifecycle.is_finished(status)
        assert found[ConditionType.RESTARTING][0] == "False"
        assert found[ConditionType.RUNNING][0] == "False"
        assert found[ConditionType.SUCCEEDED][0] == ("True" if succeeded else "False")
        assert found[ConditionType.STALLED][0] == ("False" if succeeded else "True")
        assert status["phase"] == (Phase.SUCCEEDED if succeeded else Phase.FAILED)


def test_the_earliest_known_delay() -> None:
    assert jobs.earliest(None, None) is None
    assert jobs.earliest(None, 30.0, 12.5) == 12.5


# --- following a reference ------------------------------------------------------------------------
class Refs:
    def __init__(self, obj: dict[str, Any] | None) -> None:
        self.obj = obj
        self.references: list[tuple[Key, list[Key], str]] = []

    def set_references(self, key: Key, refs: Any, slot: str = "") -> None:
        self.references.append((key, list(refs), slot))

    async def get(self, key: Key) -> dict[str, Any] | None:
        return self.obj


FIELD = references.RefField("spec.source.trainingJobRef.name", Reason.WAITING_FOR_TRAINING_JOB, "create it", "fix it")
ME = Key("ModelConversion", "ml", "mc")
REF = Key("TrainingJob", "ml", "tj")


def job(summary: str | None, stalled: bool = False) -> dict[str, Any]:
    conditions = [] if summary is None else [{"type": ConditionType.SUCCEEDED, "status": summary, "message": "boom"}]
    if stalled:
        conditions.append({"type": ConditionType.STALLED, "status": "True"})
    return {"status": {"phase": "Running", "conditions": conditions}}


@pytest.mark.parametrize(
    ("obj", "reason", "failed", "message"),
    [
        (None, Reason.REFERENCE_NOT_FOUND, False, "spec.source.trainingJobRef.name: TrainingJob 'tj' not found in namespace 'ml'; create it"),
        (job("False"), Reason.REFERENCE_FAILED, True, "spec.source.trainingJobRef.name: TrainingJob 'tj' failed (boom); fix it"),
        (job("Unknown", stalled=True), Reason.REFERENCE_FAILED, True, "spec.source.trainingJobRef.name: TrainingJob 'tj' failed (boom); fix it"),
        (job("Unknown"), Reason.WAITING_FOR_TRAINING_JOB, False, "waiting for TrainingJob 'tj' to succeed (phase Running)"),
    ],
)
async def test_a_reference_not_succeeded_is_waited_for_with_the_field_and_fix(
    obj: dict[str, Any] | None, reason: str, failed: bool, message: str
) -> None:
    rt = Refs(obj)
    with pytest.raises(references.Waiting) as caught:
        await references.require_succeeded(cast(Engine, rt), ME, REF, FIELD, "canary")
    assert (caught.value.reason, caught.value.failed, caught.value.message) == (reason, failed, message)
    assert rt.references == [(ME, [REF], "canary")]  # a change of the reference wakes the referrer


async def test_a_succeeded_reference_is_returned() -> None:
    succeeded = job("True")
    assert await references.require_succeeded(cast(Engine, Refs(succeeded)), ME, REF, FIELD) is succeeded
    unusable = references.unusable(FIELD, REF, "has no usable frozen graph")
    assert (unusable.reason, unusable.failed) == (Reason.REFERENCE_FAILED, True)
    assert unusable.message == "spec.source.trainingJobRef.name: TrainingJob 'tj' succeeded but has no usable frozen graph"


# --- Secrets the operator may not read ------------------------------------------------------------
class ForbiddenClient:
    def __init__(self, status: int = 403) -> None:
        self.status = status
        self.calls: list[str] = []

    async def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("get")
        raise ApiError(self.status, "Forbidden", "secrets is forbidden")

    async def get_metadata(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("get_metadata")
        raise ApiError(self.status, "Forbidden", "secrets is forbidden")


def rt_with(client: ForbiddenClient) -> Engine:
    return cast(Engine, SimpleNamespace(settings=Settings(storage_secret="s3-credentials"), client=client))


async def test_a_forbidden_storage_secret_blocks_the_pods_and_says_how_to_grant_it() -> None:
    client = ForbiddenClient()
    uri = parse_storage_uri("s3://bucket/flowers", "spec.dataset.uri")
    blocked = await credentials.check_storage_secret(rt_with(client), "ml", [uri], StorageOptions(secret_name="mine"))
    assert blocked is not None and blocked.reason == Reason.STORAGE_SECRET_MISSING
    assert blocked.message.startswith("the operator may not read Secret 'mine' in namespace 'ml' (spec.storage.secretName;")
    assert blocked.message.endswith(credentials.GRANT_HINT) and blocked.requeue_after == credentials.RETRY_SECONDS
    assert client.calls == ["get"]


async def test_a_forbidden_auth_secret_is_looked_up_by_metadata_only_and_blocks() -> None:
    client = ForbiddenClient()
    spec = SimpleNamespace(auth=SimpleNamespace(secret_name="tokens"))
    blocked = await serving.check_auth_secret(rt_with(client), "ml", cast(Any, spec))
    assert blocked is not None and blocked.reason == Reason.AUTH_SECRET_MISSING
    assert blocked.message == (
        f"the operator may not look up Secret 'tokens' (spec.auth.secretName) in namespace 'ml'; {credentials.GRANT_HINT}"
    )
    assert client.calls == ["get_metadata"]


async def test_other_api_errors_are_not_taken_for_a_missing_permission() -> None:
    with pytest.raises(ApiError):
        await credentials.fetch_secret(rt_with(ForbiddenClient(500)), "ml", "mine")
