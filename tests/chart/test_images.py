"""The Dockerfiles: multi-stage, pinned bases and dependencies, non-root, `ascend-mlops <subcommand>`.

hadolint lints them in CI (.ci/checks/hadolint.sh); these tests check what
hadolint does not know: that each image runs the subcommand the operator's
pods expect, as the user they expect.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from ascend_mlops import cli
from ascend_mlops.api import contract
from ascend_mlops.builders import common
from tests.chart.chartutil import CHART
from tests.helpers import REPO_ROOT

IMAGES = REPO_ROOT / "images"
EXPECTED = {
    "operator": contract.CMD_OPERATOR,
    "trainer": contract.CMD_TRAIN,
    "converter": contract.CMD_CONVERT,
    "server": contract.CMD_SERVE,
}


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    args: dict[str, str]  # global ARGs (before the first FROM) with defaults
    stages: list[Stage]

    def resolve(self, text: str, local: dict[str, str] | None = None) -> str:
        values = {**self.args, **(local or {})}
        return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), text)


def parse(path: Path) -> Dockerfile:
    # Join continuation lines, drop comments.
    logical: list[str] = []
    buffer = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--platform")]
            stages.append(Stage(base=words[0]))
        elif not stages:
            assert keyword == "ARG", f"{path}: only ARG may come before FROM, found {keyword}"
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return Dockerfile(args=args, stages=stages)


def dockerfiles() -> list[Path]:
    return sorted(IMAGES.glob("*/Dockerfile"))


def stage_args(stage: Stage) -> dict[str, str]:
    found = {}
    for keyword, rest in stage.instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            found[name.strip()] = default.strip()
    return found


def test_there_is_one_image_per_entry_point() -> None:
    assert {p.parent.name for p in dockerfiles()} == set(EXPECTED)
    assert set(EXPECTED.values()) <= set(cli.SUBCOMMANDS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_image_is_multi_stage_with_pinned_bases(name: str) -> None:
    dockerfile = parse(IMAGES / name / "Dockerfile")
    assert len(dockerfile.stages) >= 2, f"{name}: build and runtime stages expected"
    for stage in dockerfile.stages:
        base = dockerfile.resolve(stage.base)
        assert "$" not in base, f"{name}: base {stage.base} has an ARG without a default"
        repository, _, tag = base.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: base image {base} is not pinned to a tag"
        # No registry host baked in: a reference starting with a host has a dot
        # or a port in the part before its first slash.
        if "/" in base:
            first = base.split("/")[0]
            assert "." not in first and ":" not in first, f"{name}: base image {base} names a registry"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_image_runs_its_subcommand_as_a_non_root_user(name: str) -> None:
    dockerfile = parse(IMAGES / name / "Dockerfile")
    final = dockerfile.stages[-1]
    entrypoints = [rest for keyword, rest in final.instructions if keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1, f"{name}: one ENTRYPOINT in the final stage"
    assert json.loads(entrypoints[0]) == [contract.ENTRYPOINT, EXPECTED[name]]
    assert not [rest for keyword, rest in final.instructions if keyword == "CMD"], "arguments come from the pod"

    users = [rest for keyword, rest in final.instructions if keyword == "USER"]
    assert users, f"{name}: the final stage sets no USER, so it would run as root"
    user = dockerfile.resolve(users[-1], stage_args(final)).split(":")[0]
    assert user.isdigit(), f"{name}: USER {users[-1]} must be numeric so runAsNonRoot can check it"
    assert int(user) != 0
    # The last USER comes after every RUN: nothing after it runs as root.
    last_user = max(i for i, (k, _) in enumerate(final.instructions) if k == "USER")
    assert all(k != "RUN" for k, _ in final.instructions[last_user:])
    if name == "operator":
        values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
        assert int(user) == values["podSecurityContext"]["runAsUser"]
    else:
        # Workload pods run with runAsUser set by the operator's builders.
        assert int(user) == common.WORKLOAD_UID


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_python_dependencies_are_installed_with_the_pinned_constraints(name: str) -> None:
    dockerfile = parse(IMAGES / name / "Dockerfile")
    installs = [
        rest
        for stage in dockerfile.stages
        for keyword, rest in stage.instructions
        if keyword == "RUN" and re.search(r"pip install\b", rest)
    ]
    assert installs, f"{name}: installs nothing"
    for command in installs:
        assert "--constraint" in command and "--no-cache-dir" in command, command
    ignore = [
        line.strip()
        for line in (IMAGES / name / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*", "the build context starts from nothing and lets in only what the image needs"
    assert {"!pyproject.toml", "!operator/", "!images/constraints.txt"} <= set(ignore)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_constraints_pin_every_runtime_dependency() -> None:
    pins: dict[str, str] = {}
    for line in (IMAGES / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[_canonical(name)] = version
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = list(project["dependencies"]) + list(project["optional-dependencies"]["tensorflow"])
    missing = [
        req for req in wanted if _canonical(re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0]) not in pins
    ]
    assert not missing, f"images/constraints.txt does not pin {missing}: run scripts/image-constraints.py"


def _render(kind: str, *args: str) -> list[str]:
    """scripts/image-pods.py (what scripts/check-images.sh runs inside the operator image), here in-process."""
    import contextlib
    import io
    import runpy

    module = runpy.run_path(str(REPO_ROOT / "scripts" / "image-pods.py"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert module["main"]([kind, *args]) == 0
    words = out.getvalue().split("\0")
    assert words[-1] == ""
    return words[:-1]


@pytest.mark.parametrize(
    ("kind", "args"),
    [
        ("training", ["--dataset", "file:///w/data", "--output", "file:///w/runs", "--set", "epochs=1"]),
        ("conversion", ["--source", "file:///w/runs/V001/frozen_graph", "--input-shape", "images:1,32,32,3"]),
        ("inference", ["--model", "file:///w/runs/V001/om/model", "--labels", "file:///w/runs/V001/labels.txt",
                       "--publish", "127.0.0.1:9999"]),
    ],
)
def test_image_checks_run_the_operators_pods_hardened(kind: str, args: list[str]) -> None:
    """The image checks run each workload with the flags its pod translates to, and only those."""
    words = _render(kind, *args, "--termination-log", "/w/termination-log")
    flags, image_args = words[: words.index("{image}")], words[words.index("{image}") + 1 :]
    assert f"--user={common.WORKLOAD_UID}:{common.WORKLOAD_UID}" in flags
    assert {"--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL", "--security-opt=no-new-privileges"} <= set(flags)
    assert "--tmpfs=/tmp:rw,exec,nosuid,nodev,mode=0777" in flags
    assert "--volume=/w/termination-log:/dev/termination-log:rw" in flags
    assert f"--env={contract.ENV_SIMULATOR}=1" in flags or kind == "training"
    assert f"--entrypoint={json.dumps([contract.ENTRYPOINT])}" in flags
    assert image_args[0] == {"training": contract.CMD_TRAIN, "conversion": contract.CMD_CONVERT,
                             "inference": contract.CMD_SERVE}[kind]
    writable = [f for f in flags if f.startswith(("--volume=", "--tmpfs=")) and not f.endswith(":ro")]
    assert all(f.startswith(("--tmpfs=/tmp:", "--volume=/w/")) for f in writable), writable
