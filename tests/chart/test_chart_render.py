"""The Helm chart rendered by the real `helm template`: defaults, non-default values, hardening."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from ascend_mlops import settings as settings_module
from ascend_mlops.api import constants, contract
from ascend_mlops.api.specs import parse_inference_service, parse_storage_uri
from ascend_mlops.builders import common, inference
from ascend_mlops.settings import Settings
from tests.chart.chartutil import (
    CHART,
    NAMESPACE,
    of_kind,
    one,
    render,
    render_failure,
    require_helm,
)

ENV_NAMES = {
    value
    for name, value in vars(settings_module).items()
    if name.startswith("ENV_") and isinstance(value, str) and value.startswith(settings_module.PREFIX)
}


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    container: dict[str, Any] = pod["containers"][0]
    return container


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in operator_container(docs)["env"] if "value" in e}


def test_default_values_render_the_operator_and_the_crds() -> None:
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
        + ["CustomResourceDefinition"] * len(constants.PLURALS)
    )
    crd_kinds = {d["spec"]["names"]["kind"] for d in of_kind(docs, "CustomResourceDefinition")}
    assert crd_kinds == set(constants.PLURALS)
    for doc in docs:
        if doc["kind"] not in {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


def test_operator_deployment_is_hardened_with_liveness_only() -> None:
    deployment = one(render(), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # No peering: never two operators at once, not even during a rollout.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [contract.ENTRYPOINT, contract.CMD_OPERATOR]
    assert "args" not in container

    assert "readinessProbe" not in container
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = operator_env([deployment])
    assert ports[probe["port"]] == int(env[settings_module.ENV_HEALTH_PORT])
    assert ports["metrics"] == int(env[settings_module.ENV_METRICS_PORT])

    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume
    assert pod["serviceAccountName"] == one(render(), "ServiceAccount")["metadata"]["name"]


def test_the_chart_sets_every_operator_setting_and_its_defaults_match_the_code() -> None:
    env = operator_env(render())
    assert {name for name in env if name.startswith(settings_module.PREFIX)} == ENV_NAMES
    # The chart's defaults and the operator's own defaults are the same settings.
    assert Settings.from_env(env) == Settings()


def test_non_default_values_reach_the_operator_settings() -> None:
    docs = render("namespaced-values.yaml")
    env = operator_env(docs)
    assert {name for name in env if name.startswith(settings_module.PREFIX)} == ENV_NAMES
    assert env["TZ"] == "UTC"  # extraEnv
    settings = Settings.from_env(env)
    assert settings.namespaces == ("ml-team", "ml-serving")
    assert settings.trainer_image == "registry.example.com/mirror/ascend-mlops/trainer:0.1.0"
    assert settings.server_image == "registry.example.com/mirror/ascend-mlops/server:0.1.0-acl"
    assert settings.image_pull_policy == "Always"
    assert settings.accelerator_resource == "huawei.com/Ascend310P"
    assert dict(settings.accelerator_node_selector) == {"accelerator": "huawei-Ascend310P", "host-arch": "huawei-arm"}
    assert settings.accelerator_toleration_key == "huawei.com/Ascend310P"
    assert settings.driver_mounts == settings_module.DRIVER_MOUNTS_HOSTPATH
    assert settings.simulator is True
    assert settings.log_format == "json"
    assert (settings.storage_secret, settings.scratch_size) == ("obs-creds", "50Gi")
    assert settings.gateway == ("gateway-system", "public") and settings.domain == "models.example.com"
    assert (settings.ingress_class, settings.url_scheme) == ("nginx", "https")
    assert settings.prometheus_address == "http://prometheus-operated.monitoring.svc:9090"
    assert settings.pod_start_timeout == 600
    container = operator_container(docs)
    assert container["image"] == "registry.example.com/mirror/ascend-mlops/operator:0.1.0-rc1"


def test_gateway_domain_is_still_read_when_domain_is_unset() -> None:
    """gateway.domain (the canary release's value) keeps working; the top-level domain wins over it."""
    assert Settings.from_env(operator_env(render(sets=("gateway.domain=old.example.com",)))).domain == "old.example.com"
    both = ("gateway.domain=old.example.com", "domain=new.example.com")
    assert Settings.from_env(operator_env(render(sets=both))).domain == "new.example.com"


def test_no_registry_host_is_baked_into_the_default_images() -> None:
    docs = render()
    env = operator_env(docs)
    images = [operator_container(docs)["image"]] + [
        env[name]
        for name in (settings_module.ENV_TRAINER_IMAGE, settings_module.ENV_CONVERTER_IMAGE, settings_module.ENV_SERVER_IMAGE)
    ]
    for image in images:
        first = image.split("/")[0]
        # A registry host has a dot or a port, or is localhost (the Docker reference grammar).
        assert "." not in first and ":" not in first and first != "localhost", image
        assert image.startswith("ascend-mlops/") and image.endswith(":0.1.0"), image


def test_watch_namespaces_get_roles_and_the_cluster_role_only_cluster_scoped_reads() -> None:
    docs = render("namespaced-values.yaml")
    roles = of_kind(docs, "Role")
    bindings = of_kind(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml-serving", "ml-team"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ml-serving", "ml-team"]
    service_account = one(docs, "ServiceAccount")["metadata"]["name"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE}]
    cluster_resources = {r for rule in one(docs, "ClusterRole")["rules"] for r in rule["resources"]}
    assert cluster_resources == {"namespaces", "customresourcedefinitions", "nodes"}
    for role in roles:
        assert {"pods", "deployments", "services"} <= {r for rule in role["rules"] for r in rule["resources"]}


def test_service_monitor_scrapes_the_metrics_service() -> None:
    docs = render("namespaced-values.yaml")
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert selector.items() <= service["spec"]["selector"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The Service's targetPort reaches the operator's metrics port.
    target = service["spec"]["ports"][0]["targetPort"]
    assert target in {p["name"] for p in operator_container(docs)["ports"]}
    assert "ServiceMonitor" not in {d["kind"] for d in render()}


def _inference_pod_template() -> dict[str, Any]:
    owner = common.Owner(kind=constants.INFERENCE_SERVICE, name="flowers", namespace="ml-team", uid="u")
    spec = parse_inference_service({"model": {"uri": "pvc://models/flowers/V001/om/model"}}, "huawei.com/Ascend310")
    model = inference.ResolvedModel(uri=parse_storage_uri("pvc://models/flowers/V001/om/model", "model"), labels=None, runtime="acl")
    template: dict[str, Any] = inference.build_deployment(spec, owner, Settings(), model)["spec"]["template"]
    return template


def test_pod_monitor_scrapes_the_model_servers_metrics_port() -> None:
    docs = render("namespaced-values.yaml")
    monitor = of_kind(docs, "PodMonitor")
    assert len(monitor) == 1 and monitor[0]["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor[0]["spec"]
    template = _inference_pod_template()
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": ["ml-team", "ml-serving"]}
    (endpoint,) = spec["podMetricsEndpoints"]
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    assert endpoint["port"] == "metrics" and ports["metrics"] == contract.DEFAULT_METRICS_PORT
    assert endpoint["path"] == contract.METRICS_PATH
    # The conventional annotations say the same, for Prometheus' kubernetes-pods scrape job.
    annotations = template["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (str(ports["metrics"]), contract.METRICS_PATH)
    assert not of_kind(render(), "PodMonitor")
    cluster_wide = of_kind(render(sets=("metrics.podMonitor.enabled=true",)), "PodMonitor")
    assert cluster_wide[0]["spec"]["namespaceSelector"] == {"any": True}


def test_network_policy_selects_the_operators_inference_pods() -> None:
    docs = render("namespaced-values.yaml")
    policies = of_kind(docs, "NetworkPolicy")
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["ml-serving", "ml-team"]
    template = _inference_pod_template()
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    server_port = ports["http"]
    operator_pods = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    for policy in policies:
        spec = policy["spec"]
        # The selector matches what the operator's builder puts on model-server pods...
        assert spec["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        assert spec["policyTypes"] == ["Ingress"]
        rule, metrics = spec["ingress"]
        # /metrics is its own port: the operator (canary analysis) and Prometheus' namespace only.
        assert metrics["ports"] == [{"protocol": "TCP", "port": ports["metrics"]}]
        assert metrics["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}, "podSelector": {"matchLabels": operator_pods}},
            {"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring"]}]}},
        ]
        # ...and admits traffic to the port the server listens on, from the allowed peers only.
        assert rule["ports"] == [{"protocol": "TCP", "port": server_port}]
        assert {"podSelector": {}} in rule["from"]
        assert {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ingress-nginx"]}
                ]
            }
        } in rule["from"]
        assert {"podSelector": {"matchLabels": {"app": "flowers-web"}}} in rule["from"]
    # The operator's own pod is not a model server.
    operator_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not policies[0]["spec"]["podSelector"]["matchLabels"].items() <= operator_labels.items()
    assert "NetworkPolicy" not in {d["kind"] for d in render()}


def test_network_policy_without_sources_admits_only_the_operator_to_metrics() -> None:
    docs = render("external-crds-values.yaml")
    policy = one(docs, "NetworkPolicy")
    assert policy["metadata"]["namespace"] == "ml-serving"
    # No rule for the server port: `ingress: [{}]` or an empty `from` would admit everyone.
    (metrics,) = policy["spec"]["ingress"]
    assert metrics["ports"] == [{"protocol": "TCP", "port": contract.DEFAULT_METRICS_PORT}]
    operator_pods = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}, "podSelector": {"matchLabels": operator_pods}},
    ]


def test_crds_and_service_account_can_be_managed_elsewhere() -> None:
    docs = render("external-crds-values.yaml")
    kinds = {d["kind"] for d in docs}
    assert "CustomResourceDefinition" not in kinds
    assert "ServiceAccount" not in kinds
    assert "Service" not in kinds
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 0
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "ascend-mlops-operator"
    assert one(docs, "ClusterRoleBinding")["subjects"][0]["name"] == "ascend-mlops-operator"


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (("replicaCount=2",), "replicaCount"),
        (("accelerator.driverMounts=privileged",), "driverMounts"),
        (("logFormat=xml",), "logFormat"),
        (("podStartTimeoutSeconds=0",), "podStartTimeoutSeconds"),
        (("watchNamespaces[0]=Not_A_Namespace",), "watchNamespaces"),
        (("metrics.service.enabled=false", "metrics.serviceMonitor.enabled=true"), "metrics.service.enabled"),
        (("unknownValue=1",), "unknownValue"),
    ],
)
def test_bad_values_are_refused_with_the_value_named(sets: tuple[str, ...], expected: str) -> None:
    assert expected in render_failure(*sets)


def test_notes_tell_what_to_apply_next() -> None:
    helm = require_helm()
    result = subprocess.run(
        [helm, "install", "--dry-run=client", "demo", str(CHART), "--namespace", NAMESPACE, "--set", "simulator=true"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl apply -f examples/flowers/" in notes
    assert "kubectl wait --for=condition=Ready inferenceservices.ascend.mlops.dev" in notes
    assert "accelerator=huawei-Ascend310" in notes and "huawei.com/Ascend310:NoSchedule" in notes
    assert "simulator" in notes.lower()


def test_notes_say_what_to_check_when_a_pod_waits() -> None:
    helm = require_helm()
    result = subprocess.run(
        [helm, "install", "--dry-run=client", "demo", str(CHART), "--namespace", NAMESPACE, "--set", "podStartTimeoutSeconds=120"],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "KUBECONFIG": os.devnull},
    )
    assert result.returncode == 0, result.stderr
    waits = result.stdout.split("NOTES:", 1)[1].split("If a pod waits", 1)[1]
    assert "after 120 s" in waits and "PodStartTimeout" in waits
    for reason in ("FailedScheduling", "FailedMount", "ErrImageNeverPull"):
        assert reason in waits
    assert "kubectl get events --field-selector involvedObject.name=<pod>" in waits
