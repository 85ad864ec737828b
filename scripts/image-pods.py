"""The operator's own pod for a workload, as `podman run` arguments (for scripts/check-images.sh).

    python image-pods.py training   --dataset URI --output URI --set NAME=VALUE ... --termination-log FILE
    python image-pods.py conversion --source URI --input-shape images:1,32,32,3 --termination-log FILE
    python image-pods.py inference  --model URI --labels URI --publish ADDRESS:PORT --termination-log FILE

Runs inside the operator image, so that the pods are built by the operator's
builders exactly as a cluster would get them (with ASCEND_MLOPS_SIMULATOR=1,
as on a cluster without NPUs). Prints NUL-separated `podman run` arguments:
the flags, the token {image}, then the container's arguments. The pod is
translated as a kubelet would run it:

- securityContext: runAsUser/runAsGroup -> --user, fsGroup -> --group-add,
  readOnlyRootFilesystem -> --read-only (and no other writable tmpfs),
  capabilities.drop -> --cap-drop, allowPrivilegeEscalation false ->
  no-new-privileges, seccomp RuntimeDefault -> podman's default profile;
- volumes: hostPath -> bind mount (read-only where the mount is; the
  pseudo-flags @require=PATH and @mkdir=UID:GID:PATH tell the caller to check
  a type Directory path, or to create a DirectoryOrCreate one writable by the
  pod's user, see scripts/check-images.sh), emptyDir ->
  a fresh tmpfs (mode 0777, like an emptyDir), terminationMessagePath -> the
  host file given (the kubelet bind-mounts one);
- env (value, and fieldRef metadata.name / metadata.namespace), command, args,
  the container port (inference).

Resources are not translated: CPU and memory requests are scheduling, and the
accelerator is served by the Ascend simulator.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ascend_mlops.api import constants
from ascend_mlops.api.specs import (
    parse_inference_service,
    parse_model_conversion,
    parse_storage_uri,
    parse_training_job,
)
from ascend_mlops.builders import common, conversion, inference, training
from ascend_mlops.builders.model_pod import ResolvedModel
from ascend_mlops.settings import Settings

NAMESPACE = "images-check"
SETTINGS = Settings.from_env({"ASCEND_MLOPS_SIMULATOR": "1"})


def owner(kind: str, name: str) -> common.Owner:
    return common.Owner(kind=kind, name=name, namespace=NAMESPACE, uid=f"uid-{name}")


def training_pod(args: argparse.Namespace) -> dict[str, Any]:
    # Numbers as a manifest would spell them (epochs: 1), not strings.
    hyperparameters = {name: json.loads(value) for name, value in (item.split("=", 1) for item in args.set)}
    spec = parse_training_job(
        {
            "algorithm": {"name": args.algorithm, "hyperparameters": hyperparameters},
            "dataset": {"uri": args.dataset, "trainRatio": 0.8},
            "output": {"uri": args.output},
        }
    )
    return training.build_pod(spec, owner(constants.TRAINING_JOB, "tiny"), SETTINGS, index=0, attempt=0)


def conversion_pod(args: argparse.Namespace) -> dict[str, Any]:
    spec = parse_model_conversion(
        {
            "source": {"uri": args.source},
            "options": {"inputShape": args.input_shape, "inputFormat": "NHWC", "outNodes": "logits:0"},
        }
    )
    source = parse_storage_uri(args.source, "source")
    output = conversion.default_output_for_source(source)
    return conversion.build_pod(spec, owner(constants.MODEL_CONVERSION, "tiny-om"), SETTINGS, source=source, output=output, attempt=0)


def inference_pod(args: argparse.Namespace) -> dict[str, Any]:
    spec = parse_inference_service({"model": {"uri": args.model}, "runtime": "acl"}, SETTINGS.accelerator_resource)
    model = ResolvedModel(uri=parse_storage_uri(args.model, "model"), labels=parse_storage_uri(args.labels, "labels"), runtime="acl")
    deployment = inference.build_deployment(spec, owner(constants.INFERENCE_SERVICE, "tiny"), SETTINGS, model)
    template = deployment["spec"]["template"]
    return {"metadata": {"name": f"{deployment['metadata']['name']}-0", "namespace": NAMESPACE}, "spec": template["spec"]}


def podman_args(pod: dict[str, Any], termination_log: str | None, publish: str | None) -> list[str]:
    spec = pod["spec"]
    (container,) = spec["containers"]
    pod_security = spec.get("securityContext") or {}
    security = container.get("securityContext") or {}
    flags = [f"--name={pod['metadata']['name']}", f"--hostname={pod['metadata']['name']}"]

    uid, gid = pod_security.get("runAsUser"), pod_security.get("runAsGroup")
    if uid is None or not pod_security.get("runAsNonRoot") or int(uid) == 0:
        raise SystemExit(f"{pod['metadata']['name']}: the pod does not run as a fixed non-root user: {pod_security}")
    flags.append(f"--user={uid}:{gid if gid is not None else uid}")
    if pod_security.get("fsGroup") is not None:
        flags.append(f"--group-add={pod_security['fsGroup']}")
    if (pod_security.get("seccompProfile") or {}).get("type") not in (None, "RuntimeDefault"):
        raise SystemExit(f"unexpected seccomp profile {pod_security['seccompProfile']}")
    if security.get("readOnlyRootFilesystem"):
        # podman's --read-only adds writable tmpfs on /tmp, /var/tmp and /run
        # by default; a pod gets only its volumes.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    flags += [f"--cap-drop={cap}" for cap in (security.get("capabilities") or {}).get("drop", [])]
    flags += [f"--cap-add={cap}" for cap in (security.get("capabilities") or {}).get("add", [])]
    if security.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")

    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        target = mount["mountPath"]
        if "hostPath" in volume:
            host = volume["hostPath"]
            if host.get("type") == "Directory":
                flags.append(f"@require={host['path']}")
            elif host.get("type") == "DirectoryOrCreate":
                owner_ids = f"{uid}:{pod_security.get('fsGroup', gid if gid is not None else uid)}"
                flags.append(f"@mkdir={owner_ids}:{host['path']}")
            else:
                raise SystemExit(f"volume {volume['name']}: hostPath type {host.get('type')!r} is not translated")
            options = "ro" if mount.get("readOnly") else "rw"
            flags.append(f"--volume={host['path']}:{target}:{options}")
        elif "emptyDir" in volume:
            flags.append(f"--tmpfs={target}:rw,exec,nosuid,nodev,mode=0777")
        else:
            raise SystemExit(f"volume {volume['name']}: only hostPath and emptyDir are translated, got {volume}")
    if termination_log:
        flags.append(f"--volume={termination_log}:{container['terminationMessagePath']}:rw")

    fields = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": NAMESPACE}
    for entry in container.get("env", []):
        if "value" in entry:
            value = entry["value"]
        elif (ref := (entry.get("valueFrom") or {}).get("fieldRef")) and ref.get("fieldPath") in fields:
            value = fields[ref["fieldPath"]]
        else:
            raise SystemExit(f"env {entry['name']}: only literal values and pod name/namespace are translated, got {entry}")
        flags.append(f"--env={entry['name']}={value}")

    if publish:
        # The server's clients' port (a server pod also has its "metrics" port).
        port = next(p for p in container["ports"] if p["name"] == "http") if len(container["ports"]) > 1 else container["ports"][0]
        flags.append(f"--publish={publish}:{port['containerPort']}")
    else:
        flags.append("--network=none")
    flags.append(f"--entrypoint={json.dumps(container['command'])}")
    return [*flags, "{image}", *container["args"]]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    train = kinds.add_parser("training")
    train.add_argument("--dataset", required=True)
    train.add_argument("--output", required=True)
    train.add_argument("--algorithm", default="mobilenet_v1")
    train.add_argument("--set", action="append", default=[])
    convert = kinds.add_parser("conversion")
    convert.add_argument("--source", required=True)
    convert.add_argument("--input-shape", required=True)
    serve = kinds.add_parser("inference")
    serve.add_argument("--model", required=True)
    serve.add_argument("--labels", required=True)
    serve.add_argument("--publish", required=True)
    for sub in (train, convert, serve):
        sub.add_argument("--termination-log", required=True)
    args = parser.parse_args(argv)

    pod = {"training": training_pod, "conversion": conversion_pod, "inference": inference_pod}[args.kind](args)
    words = podman_args(pod, getattr(args, "termination_log", None), getattr(args, "publish", None))
    sys.stdout.write("".join(f"{word}\0" for word in words))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
