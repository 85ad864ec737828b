"""Fixtures for the server tests: tiny models with known answers, a clean pyACL simulator."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ascend_mlops.ascend import acl_sim
from tests.workloads.server import tinymodel

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def sim() -> Iterator[object]:
    """The pyACL simulator, reset before and after the test."""
    acl_sim.sim_reset()
    yield acl_sim
    acl_sim.sim_reset()


@pytest.fixture(scope="session")
def tiny_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trainer-shaped version dir (frozen graph + labels) with a simulated .om under om/model."""
    root = tinymodel.write_version_dir(tmp_path_factory.mktemp("tiny") / "V001")
    tinymodel.write_simulated_om(root / "om" / "model" / "model.om")
    tinymodel.write_simulated_om(root / "om-dynamic" / "model" / "model.om", dynamic_batches=(1, 2, 4, 8))
    return root


@pytest.fixture(scope="session")
def tiny_om(tiny_version: Path) -> Path:
    return tiny_version / "om" / "model" / "model.om"


@pytest.fixture(scope="session")
def tiny_dynamic_om(tiny_version: Path) -> Path:
    return tiny_version / "om-dynamic" / "model" / "model.om"
