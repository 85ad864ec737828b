"""The trainer's progress line; the format is shared with the operator and lives in
`ascend_mlops.api.progress` (re-exported here for the trainer's modules)."""

from __future__ import annotations

from ascend_mlops.api.progress import EpochProgress, parse

__all__ = ["EpochProgress", "parse"]
