from __future__ import annotations

import json
import re
from typing import Any

from ascend_mlops.api import constants, contract
from ascend_mlops.api.specs import (
    parse_inference_service,
    parse_model_conversion,
    parse_storage_uri,
    parse_training_job,
)
from ascend_mlops.builders import common, conversion, inference, serving, training
from ascend_mlops.settings import Settings
from ascend_mlops.storage import MOUNT_LABELS, host_volume_name

SETTINGS = Settings.from_env({})
TJ = common.Owner(kind=constants.TRAINING_JOB, name="flowers", namespace="ml", uid="uid-tj")
MC = common.Owner(kind=constants.MODEL_CONVERSION, name="flowers-om", namespace="ml", uid="uid-mc")
IS = common.Owner(kind=constants.INFERENCE_SERVICE, name="flowers", namespace="ml", uid="uid-is")


def training_spec(**extra: Any):  # type: ignore[no-untyped-def]
    return parse_training_job(
        {
            "algorithm": {"name": "resnet_v1_50", "hyperparameters": {"epochs": 3, "learning_rate": 0.01}},
            "dataset": {"uri": "pvc://data/flowers", "trainRatio": 0.8},
            "output": {"uri": "pvc://data/runs/flowers"},
            **extra,
        }
    )


def assert_hardened(pod_spec: dict[str, Any]) -> None:
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod_spec["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod_spec["volumes"]
    assert container["command"] == [contract.ENTRYPOINT]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_training_pod() -> None:
    pod = training.build_pod(training_spec(seed=7), TJ, SETTINGS, index=0, attempt=0)
    assert pod["metadata"]["name"] == "flowers-worker-0"
    assert pod["metadata"]["namespace"] == "ml"
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": constants.API_VERSION,
            "kind": "TrainingJob",
            "name": "flowers",
            "uid": "uid-tj",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    labels = pod["metadata"]["labels"]
    assert labels[constants.LABEL_MANAGED_BY] == constants.PRODUCT
    assert labels[constants.LABEL_OWNER_KIND] == "TrainingJob"
    assert labels[constants.LABEL_ATTEMPT] == "0"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert_hardened(spec)
    container = spec["containers"][0]
    assert container["image"] == SETTINGS.trainer_image
    assert container["args"] == contract.train_args(
        algorithm="resnet_v1_50",
        data=f"{contract.MOUNT_DATASET}/flowers",
        output=f"{contract.MOUNT_OUTPUT}/runs/flowers",
        train_ratio=0.8,
        hyperparameters={"epochs": 3, "learning_rate": 0.01},
        seed=7,
    )
    assert "TF_CONFIG" not in {e["name"] for e in container["env"]}
    claims = {v["name"]: v["persistentVolumeClaim"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    # Dataset and output share the claim: one volume, two mounts (read-only on the mount).
    assert claims == {"pvc-data": {"claimName": "data"}}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"] if m["name"] == "pvc-data"}
    assert mounts[contract.MOUNT_DATASET]["readOnly"] is True and "readOnly" not in mounts[contract.MOUNT_OUTPUT]
    assert training.build_services(training_spec(), TJ) == []


def test_training_retry_names_are_deterministic() -> None:
    assert training.pod_name("flowers", 0, 0) == "flowers-worker-0"
    assert training.pod_name("flowers", 1, 2) == "flowers-worker-1-retry-2"
    long = training.pod_name("x" * 300, 0, 0)
    assert len(long) <= 253 and long == training.pod_name("x" * 300, 0, 0)


def test_training_user_overrides() -> None:
    spec = training_spec(
        image="my/trainer:dev",
        env=[{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "0"}],
        resources={"limits": {"cpu": "4", "memory": "8Gi"}},
        nodeSelector={"pool": "gpu"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        algorithm={"name": "mobilenet_v1", "weights": "file:///srv/weights/mobilenet.h5"},
    )
    pod = training.build_pod(spec, TJ, SETTINGS, index=0, attempt=1)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "my/trainer:dev"
    assert {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "0"} in container["env"]
    assert container["resources"] == {"limits": {"cpu": "4", "memory": "8Gi"}}
    assert pod["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert pod["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    args = container["args"]
    assert args[args.index(contract.FLAG_WEIGHTS) + 1] == f"{contract.MOUNT_WEIGHTS}/mobilenet.h5"
    assert {"name": host_volume_name("/srv/weights"), "hostPath": {"path": "/srv/weights", "type": "Directory"}} in pod["spec"]["volumes"]


def test_multi_worker_training_gets_tf_config_and_headless_services() -> None:
    spec = training_spec(workers=3)
    pods = training.build_pods(spec, TJ, SETTINGS, attempt=0)
    assert [p["metadata"]["name"] for p in pods] == [f"flowers-worker-{i}" for i in range(3)]
    for index, pod in enumerate(pods):
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        config = json.loads(env["TF_CONFIG"])
        assert config["task"] == {"type": "worker", "index": index}
        assert config["cluster"]["worker"] == [f"flowers-worker-{i}.ml.svc:2222" for i in range(3)]
        assert pod["metadata"]["labels"][constants.LABEL_REPLICA_INDEX] == str(index)
    services = training.build_services(spec, TJ)
    assert [s["metadata"]["name"] for s in services] == [f"flowers-worker-{i}" for i in range(3)]
    for index, service in enumerate(services):
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"][constants.LABEL_REPLICA_INDEX] == str(index)
        # The selector must select the worker pod of that index.
        labels = pods[index]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())


def test_conversion_pod_and_default_output() -> None:
    spec = parse_model_conversion(
        {
            "source": {"trainingJobRef": {"name": "flowers"}},
            "options": {"inputShape": "images:1,224,224,3", "l2Optimize": True, "highPrecision": 0},
        }
    )
    source = parse_storage_uri("pvc://data/runs/flowers/V001/frozen_graph", "f")
    output = conversion.default_output_for_source(source)
    assert str(output) == "pvc://data/runs/flowers/V001/om/model"
    assert str(conversion.default_output_for_source(source.join("frozen_graph.pb"))) == str(output)
    pod = conversion.build_pod(spec, MC, Settings.from_env({"ASCEND_MLOPS_SIMULATOR": "1"}), source=source, output=output, attempt=0)
    assert pod["metadata"]["name"] == "flowers-om-convert"
    container = pod["spec"]["containers"][0]
    assert_hardened(pod["spec"])
    assert container["image"] == SETTINGS.converter_image
    assert container["args"] == contract.convert_args(
        template="TF-FrozenGraph-To-Ascend-C32",
        input_path=f"{contract.MOUNT_SOURCE}/runs/flowers/V001/frozen_graph",
        output=f"{contract.MOUNT_OUTPUT}/runs/flowers/V001/om/model",
        options={"inputShape": "images:1,224,224,3", "l2Optimize": True, "highPrecision": 0},
    )
    assert {"name": contract.ENV_SIMULATOR, "value": "1"} in container["env"]
    plain = conversion.build_pod(spec, MC, SETTINGS, source=source, output=output, attempt=2)
    assert plain["metadata"]["name"] == "flowers-om-convert-retry-2"
    assert contract.ENV_SIMULATOR not in {e["name"] for e in plain["spec"]["containers"][0]["env"]}


def test_conversion_of_a_pb_file_on_host_path() -> None:
    spec = parse_model_conversion({"source": {"uri": "file:///srv/g/frozen_graph.pb"}})
    source = spec.source
    assert source is not None
    pod = conversion.build_pod(spec, MC, SETTINGS, source=source, output=parse_storage_uri("file:///srv/om", "f"), attempt=0)
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index(contract.FLAG_INPUT) + 1] == f"{contract.MOUNT_SOURCE}/frozen_graph.pb"
    assert {"name": host_volume_name("/srv/g"), "hostPath": {"path": "/srv/g", "type": "Directory"}} in pod["spec"]["volumes"]
    assert {"name": host_volume_name("/srv/om"), "hostPath": {"path": "/srv/om", "type": "DirectoryOrCreate"}} in pod["spec"]["volumes"]


def isvc_spec(raw: dict[str, Any], settings: Settings = SETTINGS):  # type: ignore[no-untyped-def]
    return parse_inference_service(raw, settings.accelerator_resource)


MODEL = inference.ResolvedModel(
    uri=parse_storage_uri("pvc://data/runs/flowers/V001/om/model", "f"),
    labels=parse_storage_uri("pvc://data/runs/flowers/V001/labels.txt", "f"),
    runtime="acl",
)


def test_inference_deployment_requests_the_ascend_device() -> None:
    spec = isvc_spec({"model": {"conversionRef": {"name": "flowers-om"}}, "batching": {"maxBatchSize": 4, "maxDelayMs": 2}})
    deployment = inference.build_deployment(spec, IS, SETTINGS, MODEL)
    assert deployment["metadata"]["name"] == "flowers-predictor"
    assert common.ANNOTATION_SPEC_HASH in deployment["metadata"]["annotations"]
    template = deployment["spec"]["template"]
    pod = template["spec"]
    assert_hardened(pod)
    container = pod["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "3", "memory": "6Gi", "huawei.com/Ascend310": "1"},
        "limits": {"cpu": "3", "memory": "6Gi", "huawei.com/Ascend310": "1"},
    }
    assert pod["nodeSelector"] == {"accelerator": "huawei-Ascend310"}
    # Serving through the preStop sleep while the endpoints catch up, then the server's own drain.
    assert container["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    assert pod["terminationGracePeriodSeconds"] == 35
    assert pod["tolerations"] == [{"key": "huawei.com/Ascend310", "operator": "Exists", "effect": "NoSchedule"}]
    assert container["readinessProbe"]["httpGet"] == {"path": contract.HEALTH_READY_PATH, "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": contract.HEALTH_LIVE_PATH, "port": "http"}
    assert container["ports"] == [
        {"name": "http", "containerPort": contract.DEFAULT_SERVER_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": contract.DEFAULT_METRICS_PORT, "protocol": "TCP"},
    ]
    assert container["args"] == contract.serve_args(
        model=f"{contract.MOUNT_MODEL}/runs/flowers/V001/om/model",
        backend="acl",
        name="flowers",
        labels="/mnt/labels/runs/flowers/V001/labels.txt",
        max_batch_size=4,
        max_batch_delay_ms=2.0,
        metrics_port=contract.DEFAULT_METRICS_PORT,
    )
    assert contract.FLAG_AUTH_TOKENS not in container["args"]
    assert template["metadata"]["annotations"][constants.ANNOTATION_MODEL_DIGEST] == str(MODEL.uri)
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(contract.DEFAULT_METRICS_PORT)
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert not any(v["name"].startswith("ascend-driver") for v in pod["volumes"])


def test_inference_honours_settings_and_user_scheduling() -> None:
    settings = Settings.from_env(
        {
            "ASCEND_MLOPS_ACCELERATOR_RESOURCE": "huawei.com/Ascend310P",
            "ASCEND_MLOPS_ACCELERATOR_NODE_SELECTOR": "accelerator=huawei-Ascend310P",
            "ASCEND_MLOPS_ACCELERATOR_TOLERATION_KEY": "huawei.com/Ascend310P",
            "ASCEND_MLOPS_DRIVER_MOUNTS": "hostpath",
            "ASCEND_MLOPS_SIMULATOR": "1",
        }
    )
    spec = isvc_spec(
        {
            "model": {"uri": "file:///srv/models/flowers/model.om"},
            "nodeSelector": {"zone": "a"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
        },
        settings,
    )
    model = inference.ResolvedModel(uri=spec.model, labels=None, runtime="acl")  # type: ignore[arg-type]
    pod = inference.build_deployment(spec, IS, settings, model)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "2Gi", "huawei.com/Ascend310P": "1"}
    assert container["resources"]["limits"] == {"huawei.com/Ascend310P": "1"}
    assert pod["nodeSelector"] == {"accelerator": "huawei-Ascend310P", "zone": "a"}
    assert len(pod["tolerations"]) == 2
    driver = [v for v in pod["volumes"] if v["name"].startswith("ascend-driver")]
    assert {v["hostPath"]["path"] for v in driver} >= {"/usr/local/Ascend/driver/lib64", "/usr/local/dcmi"}
    assert {"name": contract.ENV_SIMULATOR, "value": "1"} in container["env"]
    args = container["args"]
    assert args[args.index(contract.FLAG_MODEL) + 1] == f"{contract.MOUNT_MODEL}/model.om"
    assert contract.FLAG_LABELS not in args


def test_tensorflow_runtime_runs_on_cpu_only() -> None:
    spec = isvc_spec({"model": {"uri": "pvc://data/runs/flowers/V001/saved_model"}, "runtime": "tensorflow"})
    model = inference.ResolvedModel(uri=spec.model, labels=None, runtime="tensorflow")  # type: ignore[arg-type]
    deployment = inference.build_deployment(spec, IS, SETTINGS, model)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "3", "memory": "6Gi"},
        "limits": {"cpu": "3", "memory": "6Gi"},
    }
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_changing_the_model_changes_the_pod_template_and_hash() -> None:
    spec = isvc_spec({"model": {"conversionRef": {"name": "flowers-om"}}})
    one = inference.build_deployment(spec, IS, SETTINGS, MODEL)
    other_model = inference.ResolvedModel(uri=MODEL.uri.parent().parent().join("V002/om/model"), labels=None, runtime="acl")
    two = inference.build_deployment(spec, IS, SETTINGS, other_model)
    assert one["spec"]["template"] != two["spec"]["template"]
    assert one["metadata"]["annotations"] != two["metadata"]["annotations"]
    assert inference.build_deployment(spec, IS, SETTINGS, MODEL) == one


def test_inference_service() -> None:
    service = inference.build_service(IS)
    assert service["metadata"]["name"] == "flowers-predictor"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == common.selector_labels(IS, inference.COMPONENT)
    assert inference.service_url("flowers", "ml") == "http://flowers-predictor.ml.svc.cluster.local"


def test_names_are_clipped_to_dns_labels() -> None:
    name = common.clip_name("a" * 80)
    assert len(name) == 63 and name == common.clip_name("a" * 80) and name != common.clip_name("a" * 81)
    assert inference.service_name("9lives")[0].isalpha()


# --- object storage --------------------------------------------------------------------
OBJECT_SETTINGS = Settings.from_env({"ASCEND_MLOPS_STORAGE_SECRET": "default-creds"})


def secret_refs(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}


def assert_object_storage_pod(pod_spec: dict[str, Any], secret: str | None, scratch: str = "20Gi") -> None:
    container = pod_spec["containers"][0]
    assert {"name": "scratch", "emptyDir": {"sizeLimit": scratch}} in pod_spec["volumes"]
    assert {"name": "scratch", "mountPath": contract.MOUNT_SCRATCH} in container["volumeMounts"]
    assert {"name": contract.ENV_SCRATCH, "value": contract.MOUNT_SCRATCH} in container["env"]
    refs = secret_refs(container)
    if secret is None:
        assert refs == {}
        return
    assert set(refs) == {*contract.STORAGE_SECRET_REQUIRED_KEYS, *contract.STORAGE_SECRET_OPTIONAL_KEYS}
    assert {ref["name"] for ref in refs.values()} == {secret}
    assert all(ref.get("optional") is not True for k, ref in refs.items() if k in contract.STORAGE_SECRET_REQUIRED_KEYS)
    assert all(ref["optional"] is True for k, ref in refs.items() if k in contract.STORAGE_SECRET_OPTIONAL_KEYS)
    assert "envFrom" not in container  # only the known keys, nothing else in the Secret
    assert_hardened(pod_spec)


def test_training_pod_on_object_storage_has_no_volume_for_it() -> None:
    spec = training_spec(
        dataset={"uri": "obs://flowers-data/flowers"},
        output={"uri": "s3://runs/flowers"},
        algorithm={"name": "resnet_v1_50", "weights": "s3://models/resnet/ckpt.h5"},
        storage={"secretName": "obs-creds", "scratchSize": "50Gi"},
    )
    pod = training.build_pod(spec, TJ, OBJECT_SETTINGS, index=0, attempt=0)
    args = pod["spec"]["containers"][0]["args"]
    for flag, value in (("--data", "obs://flowers-data/flowers"), ("--output", "s3://runs/flowers"),
                        ("--weights", "s3://models/resnet/ckpt.h5")):
        assert args[args.index(flag) + 1] == value
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["scratch", "tmp"]
    assert_object_storage_pod(pod["spec"], "obs-creds", "50Gi")


def test_mixed_pvc_and_object_storage_training_pod() -> None:
    pod = training.build_pod(training_spec(output={"uri": "s3://runs/flowers"}), TJ, OBJECT_SETTINGS, index=0, attempt=0)
    names = [v["name"] for v in pod["spec"]["volumes"]]
    assert names == ["pvc-data", "scratch", "tmp"]
    assert_object_storage_pod(pod["spec"], "default-creds")


def test_pvc_only_pods_get_no_scratch_and_no_secret() -> None:
    pod = training.build_pod(training_spec(storage={"secretName": "obs-creds"}), TJ, OBJECT_SETTINGS, index=0, attempt=0)
    assert "scratch" not in [v["name"] for v in pod["spec"]["volumes"]]
    assert secret_refs(pod["spec"]["containers"][0]) == {}
    assert all(e["name"] != contract.ENV_SCRATCH for e in pod["spec"]["containers"][0]["env"])


def test_no_secret_anywhere_means_the_pods_own_identity() -> None:
    pod = training.build_pod(training_spec(output={"uri": "s3://runs/flowers"}), TJ, SETTINGS, index=0, attempt=0)
    assert_object_storage_pod(pod["spec"], None)


def test_a_literal_env_entry_wins_over_the_secret_key() -> None:
    spec = training_spec(
        output={"uri": "s3://runs/flowers"}, env=[{"name": "AWS_ENDPOINT_URL", "value": "http://minio.ml:9000"}]
    )
    env = training.build_pod(spec, TJ, OBJECT_SETTINGS, index=0, attempt=0)["spec"]["containers"][0]["env"]
    endpoint = [e for e in env if e["name"] == "AWS_ENDPOINT_URL"]
    assert endpoint == [{"name": "AWS_ENDPOINT_URL", "value": "http://minio.ml:9000"}]


def test_conversion_from_pvc_to_object_storage() -> None:
    spec = parse_model_conversion({"source": {"trainingJobRef": {"name": "flowers"}}, "output": {"uri": "s3://models/flowers/om"}})
    source = parse_storage_uri("pvc://data/runs/flowers/V001/frozen_graph", "f")
    assert spec.output is not None
    pod = conversion.build_pod(spec, MC, OBJECT_SETTINGS, source=source, output=spec.output, attempt=0)
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--input") + 1] == f"{contract.MOUNT_SOURCE}/runs/flowers/V001/frozen_graph"
    assert args[args.index("--output") + 1] == "s3://models/flowers/om"
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["pvc-data", "scratch", "tmp"]
    assert_object_storage_pod(pod["spec"], "default-creds")


def test_conversion_default_output_stays_in_the_bucket() -> None:
    source = parse_storage_uri("obs://runs/flowers/V001/frozen_graph", "f")
    assert str(conversion.default_output_for_source(source)) == "obs://runs/flowers/V001/om/model"


def test_inference_from_object_storage_with_pvc_labels() -> None:
    spec = isvc_spec({"model": {"conversionRef": {"name": "flowers-om"}}, "storage": {"scratchSize": "2Gi"}}, OBJECT_SETTINGS)
    model = inference.ResolvedModel(
        parse_storage_uri("s3://models/flowers/om/model", "f"),
        parse_storage_uri("pvc://data/runs/flowers/V001/labels.txt", "f"),
        "acl",
    )
    deployment = inference.build_deployment(spec, IS, OBJECT_SETTINGS, model)
    template = deployment["spec"]["template"]
    args = template["spec"]["containers"][0]["args"]
    assert args[args.index("--model") + 1] == "s3://models/flowers/om/model"
    assert args[args.index("--labels") + 1] == f"{MOUNT_LABELS}/runs/flowers/V001/labels.txt"
    assert [v["name"] for v in template["spec"]["volumes"]] == ["pvc-data", "scratch", "tmp"]
    assert template["metadata"]["annotations"][constants.ANNOTATION_MODEL_DIGEST] == "s3://models/flowers/om/model"
    assert_object_storage_pod(template["spec"], "default-creds", "2Gi")
    # Another model in the bucket rolls the Deployment.
    other = inference.ResolvedModel(parse_storage_uri("s3://models/flowers/V002/om/model", "f"), None, "acl")
    rolled = inference.build_deployment(spec, IS, OBJECT_SETTINGS, other)
    assert (
        rolled["metadata"]["annotations"][common.ANNOTATION_SPEC_HASH]
        != deployment["metadata"]["annotations"][common.ANNOTATION_SPEC_HASH]
    )


# --- serving real clients: auth, autoscaling, exposure (issue 12) --------------------------------
def test_auth_mounts_the_secret_read_only_and_passes_the_directory() -> None:
    spec = isvc_spec({"model": {"conversionRef": {"name": "flowers-om"}}, "auth": {"secretName": "flowers-tokens"}})
    pod = inference.build_deployment(spec, IS, SETTINGS, MODEL)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    [volume] = [v for v in pod["volumes"] if v["name"] == inference.AUTH_VOLUME]
    assert volume == {"name": inference.AUTH_VOLUME, "secret": {"secretName": "flowers-tokens", "defaultMode": 0o440}}
    [mount] = [m for m in container["volumeMounts"] if m["name"] == inference.AUTH_VOLUME]
    assert mount == {"name": inference.AUTH_VOLUME, "mountPath": contract.MOUNT_AUTH_TOKENS, "readOnly": True}
    args = container["args"]
    assert args[args.index(contract.FLAG_AUTH_TOKENS) + 1] == contract.MOUNT_AUTH_TOKENS
    assert args[args.index(contract.FLAG_METRICS_PORT) + 1] == str(contract.DEFAULT_METRICS_PORT)
    # Nothing of the Secret's contents is in the manifest: no env from it, no token.
    assert not any("valueFrom" in e for e in container["env"])


def test_an_autoscaled_replica_count_is_no_drift() -> None:
    fixed = isvc_spec({"model": {"conversionRef": {"name": "flowers-om"}}, "replicas": 2})
    one, three = (inference.build_deployment(fixed, IS, SETTINGS, MODEL, replicas=n) for n in (1, 3))
    assert one["metadata"]["annotations"][common.ANNOTATION_SPEC_HASH] != three["metadata"]["annotations"][common.ANNOTATION_SPEC_HASH]
    scaled = isvc_spec({"model": {"conversionRef": {"name": "flowers-om"}}, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}})
    base = inference.build_deployment(scaled, IS, SETTINGS, MODEL)
    assert base["spec"]["replicas"] == 2  # a new Deployment starts at minReplicas
    four = inference.build_deployment(scaled, IS, SETTINGS, MODEL, replicas=4)
    assert four["metadata"]["annotations"][common.ANNOTATION_SPEC_HASH] == base["metadata"]["annotations"][common.ANNOTATION_SPEC_HASH]
    # The canary's count is its own (spec.canary.replicas): hashed as before.
    canary = [inference.build_deployment(scaled, IS, SETTINGS, MODEL, revision=constants.REVISION_CANARY, replicas=n) for n in (1, 2)]
    assert canary[0]["metadata"]["annotations"] != canary[1]["metadata"]["annotations"]


def autoscaling(**raw: Any) -> Any:
    spec = isvc_spec({"model": {"conversionRef": {"name": "flowers-om"}}, "autoscaling": raw})
    assert spec.autoscaling is not None
    return spec.autoscaling


def test_hpa_on_concurrency_and_on_cpu() -> None:
    hpa = serving.build_hpa(IS, autoscaling(minReplicas=1, maxReplicas=4, target=2.5))
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["metadata"]["name"] == "flowers-predictor" and hpa["metadata"]["ownerReferences"][0]["name"] == "flowers"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "flowers-predictor"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 4)
    assert spec["metrics"] == [{
        "type": "Pods",
        "pods": {"metric": {"name": contract.METRIC_INFLIGHT}, "target": {"type": "AverageValue", "averageValue": "2500m"}},
    }]
    cpu = serving.build_hpa(IS, autoscaling(maxReplicas=3, metric="cpu"))["spec"]
    assert cpu["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    assert serving.quantity(4.0) == "4" and serving.quantity(0.25) == "250m"


def test_scaled_object_queries_the_stable_pods_only() -> None:
    obj = serving.build_scaled_object(IS, autoscaling(minReplicas=2, maxReplicas=6), "http://prometheus.monitoring:9090")
    assert obj["apiVersion"] == "keda.sh/v1alpha1" and obj["kind"] == "ScaledObject"
    spec = obj["spec"]
    assert spec["scaleTargetRef"]["name"] == "flowers-predictor"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 6)
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert meta["serverAddress"] == "http://prometheus.monitoring:9090" and meta["threshold"] == "4"
    assert meta["query"] == (
        f'sum({contract.METRIC_INFLIGHT}{{namespace="ml",pod=~"flowers-predictor-[a-z0-9]+-[a-z0-9]+"}})'
    )
    pattern = re.compile("^flowers-predictor-[a-z0-9]+-[a-z0-9]+$")  # PromQL regexes are anchored
    assert pattern.match("flowers-predictor-6d4f8b9c7-x2x9z")
    assert not pattern.match("flowers-predictor-canary-6d4f8b9c7-x2x9z")


def test_ingress_host_class_and_tls() -> None:
    spec = isvc_spec({
        "model": {"conversionRef": {"name": "flowers-om"}},
        "exposure": {"type": "Ingress", "host": "flowers.example.com", "tlsSecretName": "flowers-tls"},
    })
    assert spec.exposure is not None
    ingress = serving.build_ingress(IS, spec.exposure, "flowers.example.com", "nginx")
    assert ingress["apiVersion"] == "networking.k8s.io/v1" and ingress["metadata"]["name"] == "flowers"
    body = ingress["spec"]
    assert body["ingressClassName"] == "nginx"
    assert body["tls"] == [{"hosts": ["flowers.example.com"], "secretName": "flowers-tls"}]
    [rule] = body["rules"]
    assert rule["host"] == "flowers.example.com"
    [path] = rule["http"]["paths"]
    assert path == {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "flowers-predictor", "port": {"number": 80}}}}
    assert serving.external_url(spec.exposure, "flowers.example.com", "http") == "https://flowers.example.com"
    plain = isvc_spec({"model": {"conversionRef": {"name": "flowers-om"}}, "exposure": {"type": "Ingress", "ingressClassName": "traefik"}})
    assert plain.exposure is not None
    unnamed = serving.build_ingress(IS, plain.exposure, "flowers.ml.models.example.com", "nginx")["spec"]
    assert unnamed["ingressClassName"] == "traefik" and "tls" not in unnamed  # the spec's class wins over the setting's
    bare = isvc_spec({"model": {"conversionRef": {"name": "flowers-om"}}, "exposure": {"type": "Ingress"}}).exposure
    assert "ingressClassName" not in serving.build_ingress(IS, bare, "h.example.com", "")["spec"]  # the cluster's default class
    assert serving.external_url(plain.exposure, "h.example.com", "http") == "http://h.example.com"


def test_default_hosts() -> None:
    assert serving.default_host(IS, "models.example.com") == "flowers.ml.models.example.com"
    assert serving.default_host(IS, "") is None
    long = common.Owner(kind=constants.INFERENCE_SERVICE, name="x" * 70, namespace="ml")
    assert serving.default_host(long, "models.example.com") is None  # a DNS label longer than 63


def test_httproute_takes_the_exposure_host() -> None:
    route = inference.build_httproute(IS, ("gateway-system", "public"), "flowers.example.com", None)
    assert route["spec"]["hostnames"] == ["flowers.example.com"]
    assert "hostnames" not in inference.build_httproute(IS, ("gateway-system", "public"), None, None)["spec"]
