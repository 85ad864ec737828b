"""`serve --model s3://... --labels s3://...`: fetch the model (and labels) into scratch before loading.

Runs inside the server's load step, so the port is open (live 200, ready 503)
while it downloads, and a refusal or an unreachable endpoint ends the load
with a message that names the bucket, key and endpoint.
"""

from __future__ import annotations

from pathlib import Path

from ascend_mlops.api import contract
from ascend_mlops.workloads import objectstore

# As processing.find_labels looks beside and up to 3 folders above a local model.
LABELS_SEARCH_LEVELS = 3


def find_labels(model: objectstore.ObjectURI) -> objectstore.ObjectURI | None:
    """labels.txt beside or above a model on object storage (`V001/om/model` -> `V001/labels.txt`)."""
    here = model
    for _ in range(LABELS_SEARCH_LEVELS + 1):
        candidate = here.join(contract.LABELS_FILE)
        if objectstore.head(candidate) is not None:
            return candidate
        if not here.key:
            break
        here = here.parent()
    return None


def fetch(model_uri: str | None, model: Path, labels_uri: str | None, labels: Path | None) -> tuple[Path, Path | None]:
    """Local paths of the model and labels, downloading those given as URIs. Raises StorageError."""
    labels_remote = objectstore.parse(labels_uri, contract.FLAG_LABELS) if labels_uri else None
    if model_uri:
        remote = objectstore.parse(model_uri, contract.FLAG_MODEL)
        model = objectstore.fetch_input(remote, objectstore.scratch_dir("model"), what=f"{contract.FLAG_MODEL} {remote}")
        if labels is None and labels_remote is None:
            labels_remote = find_labels(remote)
    if labels_remote is not None:
        labels = objectstore.fetch_input(
            labels_remote, objectstore.scratch_dir("labels"), what=f"{contract.FLAG_LABELS} {labels_remote}"
        )
    return model, labels
