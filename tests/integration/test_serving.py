"""InferenceService for clients outside the cluster, against the API: Ingress and HTTPRoute exposure
(hosts, backends, TLS, status.url / status.address.url), the token Secret wired into the pods, the
HorizontalPodAutoscaler (concurrency and cpu) whose replica count the operator leaves alone, a KEDA
ScaledObject once KEDA's CRD is served, children deleted with their spec field, and the conditions
for what cannot work (naming the field and the fix)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ascend_mlops import metrics
from ascend_mlops.api import constants, contract
from ascend_mlops.kube import ApiError
from tests.integration.conftest import (
    Backend,
    Cluster,
    Operator,
    eventually,
    operator_running,
    wait_served,
)
from tests.integration.test_canary import roll_out

KIND = constants.INFERENCE_SERVICE
NAME = "flowers"
DEPLOYMENT = "flowers-predictor"
V1 = "pvc://data/runs/flowers/V001/om/model"
V2 = "pvc://data/runs/flowers/V002/om/model"
DOMAIN = "models.example.com"
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
KEDA_CRD = Path(__file__).parent / "crds" / "keda.sh_scaledobjects.yaml"
INGRESS = (constants.INGRESS_API_VERSION, constants.INGRESSES)
HPA = (constants.HPA_API_VERSION, constants.HPAS)
SCALED_OBJECT = (constants.KEDA_API_VERSION, constants.SCALEDOBJECTS)


def isvc(name: str = NAME, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": constants.API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": {"model": {"uri": V1}, **spec}}


async def child(cluster: Cluster, resource: tuple[str, str], name: str = NAME) -> dict[str, Any] | None:
    return await cluster.client.get(resource[0], resource[1], cluster.namespace, name)


async def gone(cluster: Cluster, resource: tuple[str, str], name: str = NAME) -> bool:
    return await child(cluster, resource, name) is None


async def status(cluster: Cluster, name: str = NAME) -> dict[str, Any]:
    return dict(((await cluster.get_cr(KIND, name)) or {}).get("status") or {})


async def deployment(cluster: Cluster) -> dict[str, Any] | None:
    return await cluster.client.get("apps/v1", "deployments", cluster.namespace, DEPLOYMENT)


async def spec_seen(cluster: Cluster, name: str = NAME) -> dict[str, Any]:
    """The status once the operator reconciled the current spec (observedGeneration caught up)."""

    async def probe() -> dict[str, Any] | None:
        obj = await cluster.get_cr(KIND, name)
        s = (obj or {}).get("status") or {}
        return s if obj and s.get("observedGeneration") == obj["metadata"]["generation"] else None

    return await eventually(probe, what=f"{name}'s spec reconciled")


def reconciles() -> float:
    return float(metrics.RECONCILES.labels(kind=KIND, result="ok")._value.get())


async def touch(cluster: Cluster, n: int) -> None:
    """An annotation change (no new generation): one more reconciliation, waited for by the operator's own counter."""
    before = reconciles()
    await cluster.patch_cr(KIND, NAME, {"metadata": {"annotations": {"example.com/touch": str(n)}}})

    async def probe() -> bool:
        return reconciles() > before

    await eventually(probe, what="a reconciliation after the annotation change")


async def ascend_node(cluster: Cluster, name: str, devices: int) -> None:
    """A node whose device plugin advertises `devices` Ascend 310 (what its kubelet reports in status)."""
    await cluster.client.create("v1", "nodes", None, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    allocatable = {"cpu": "16", "memory": "64Gi", "huawei.com/Ascend310": str(devices)}
    await cluster.client.patch("v1", "nodes", None, name, {"status": {"allocatable": allocatable, "capacity": allocatable}}, subresource="status")


# --- exposure ---------------------------------------------------------------------------------------
async def test_ingress_hosts_backend_tls_and_urls(backend: Backend, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    async with operator_running(backend, monkeypatch, DOMAIN=DOMAIN, INGRESS_CLASS="nginx"):
        await cluster.create(isvc(exposure={"type": "Ingress", "tlsSecretName": "flowers-tls"}))
        ingress = await eventually(lambda: child(cluster, INGRESS), what="the Ingress")
        host = f"{NAME}.{cluster.namespace}.{DOMAIN}"
        assert ingress["spec"]["ingressClassName"] == "nginx"  # the operator's setting
        assert ingress["spec"]["tls"] == [{"hosts": [host], "secretName": "flowers-tls"}]
        [rule] = ingress["spec"]["rules"]
        assert rule["host"] == host
        [path] = rule["http"]["paths"]
        assert path["path"] == "/" and path["pathType"] == "Prefix"
        assert path["backend"] == {"service": {"name": DEPLOYMENT, "port": {"number": 80}}}
        svc = await eventually(lambda: cluster.client.get("v1", "services", cluster.namespace, DEPLOYMENT), what="the client Service")
        assert svc["spec"]["ports"][0]["port"] == 80
        [owner] = ingress["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["controller"]) == (KIND, NAME, True)
        seen = await spec_seen(cluster)
        assert seen["url"] == f"https://{host}"
        assert seen["address"] == {"url": f"http://{DEPLOYMENT}.{cluster.namespace}.svc.cluster.local"}

        # An explicit host and class, without TLS: http:// and the Ingress follows.
        await cluster.patch_cr(KIND, NAME, {"spec": {"exposure": {"host": "flowers.example.com", "ingressClassName": "traefik", "tlsSecretName": None}}})
        seen = await spec_seen(cluster)
        assert seen["url"] == "http://flowers.example.com"
        ingress = await child(cluster, INGRESS)
        assert ingress is not None and ingress["spec"]["rules"][0]["host"] == "flowers.example.com"
        assert ingress["spec"]["ingressClassName"] == "traefik" and "tls" not in ingress["spec"]

        # No exposure: the Ingress goes, status.url with it; the in-cluster address stays.
        await cluster.patch_cr(KIND, NAME, {"spec": {"exposure": None}})
        await eventually(lambda: gone(cluster, INGRESS), what="the Ingress deleted")
        seen = await spec_seen(cluster)
        assert "url" not in seen and seen["address"]["url"].startswith("http://flowers-predictor.")


async def test_httproute_exposure_shares_the_canary_route(
    backend: Backend, cluster: Cluster, gateway_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with operator_running(backend, monkeypatch, GATEWAY="gateway-system/public", DOMAIN=DOMAIN):
        await cluster.create(isvc(exposure={"type": "HTTPRoute", "host": "flowers.example.com"}))
        route = await eventually(lambda: child(cluster, (constants.GATEWAY_API_VERSION, constants.HTTPROUTES)), what="the HTTPRoute")
        assert route["spec"]["hostnames"] == ["flowers.example.com"]
        assert route["spec"]["parentRefs"] == [
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateway-system", "name": "public"}
        ]
        [backend] = route["spec"]["rules"][0]["backendRefs"]
        assert (backend["name"], backend["port"], backend["weight"]) == (DEPLOYMENT, 80, 1)  # the client Service
        seen = await spec_seen(cluster)
        assert seen["url"] == "http://flowers.example.com"  # the Gateway's listener decides TLS: ASCEND_MLOPS_URL_SCHEME
        assert await gone(cluster, INGRESS)

        # A canary splits on the same route, which keeps the exposure's host.
        await cluster.patch_cr(KIND, NAME, {"spec": {"canary": {"uri": V2, "trafficPercent": 20}}})
        await roll_out(cluster, DEPLOYMENT)
        await roll_out(cluster, f"{DEPLOYMENT}-canary")

        async def weighted() -> dict[str, Any] | None:
            r = await child(cluster, (constants.GATEWAY_API_VERSION, constants.HTTPROUTES))
            backends = {b["name"]: b["weight"] for b in (r or {}).get("spec", {}).get("rules", [{}])[0].get("backendRefs", [])}
            return r if backends == {f"{DEPLOYMENT}-stable": 80, f"{DEPLOYMENT}-canary": 20} else None

        route = await eventually(weighted, what="the route's 80/20 weights")
        assert route["spec"]["hostnames"] == ["flowers.example.com"]
        assert (await status(cluster))["url"] == "http://flowers.example.com"

        # Without a host the default one: <name>.<namespace>.<domain>.
        await cluster.patch_cr(KIND, NAME, {"spec": {"exposure": {"host": None}}})
        seen = await spec_seen(cluster)
        assert seen["url"] == f"http://{NAME}.{cluster.namespace}.{DOMAIN}"
        route = await child(cluster, (constants.GATEWAY_API_VERSION, constants.HTTPROUTES))
        assert route is not None and route["spec"]["hostnames"] == [f"{NAME}.{cluster.namespace}.{DOMAIN}"]


async def test_what_cannot_be_served_names_the_field_and_the_fix(backend: Backend, cluster: Cluster, operator: Operator) -> None:
    """No domain, no Gateway, and the schema's CEL rules: a real apiserver rejects those objects (422 with
    the rule's message); the sandbox's API, like an old cluster, runs no CEL, and the operator says the same."""
    cases = {
        "no-host": ({"exposure": {"type": "Ingress"}}, ["spec.exposure.host: is required", "ASCEND_MLOPS_DOMAIN", "set spec.exposure.host"]),
        "no-gateway": (
            {"exposure": {"type": "HTTPRoute", "host": "flowers.example.com"}},
            ["spec.exposure.type: is HTTPRoute", "ASCEND_MLOPS_GATEWAY", "use type: Ingress"],
        ),
        "both": ({"replicas": 2, "autoscaling": {"maxReplicas": 3}}, ["spec.replicas: and spec.autoscaling exclude each other", "remove spec.replicas"]),
        "upside-down": ({"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}, ["spec.autoscaling.minReplicas: 4 is above maxReplicas 2"]),
    }
    cel = {
        "both": "set either replicas or autoscaling, not both",
        "upside-down": "minReplicas must not be above maxReplicas",
    }
    for name, (spec, _) in cases.items():
        if backend.real and name in cel:
            with pytest.raises(ApiError) as rejected:
                await cluster.create(isvc(name, **spec))
            assert rejected.value.status == 422 and cel[name] in rejected.value.message, rejected.value
        else:
            await cluster.create(isvc(name, **spec))
    if backend.real:
        cases = {name: case for name, case in cases.items() if name not in cel}
    for name, (_, fragments) in cases.items():
        valid = await cluster.wait_condition(KIND, name, "Valid", "False", "InvalidSpec")
        for fragment in fragments:
            assert fragment in valid["message"], (name, valid["message"])
        stalled = await cluster.wait_condition(KIND, name, "Stalled", "True")
        assert stalled["reason"] == "InvalidSpec"
    # Nothing was created for them.
    for name in cases:
        assert await cluster.client.get("apps/v1", "deployments", cluster.namespace, f"{name}-predictor") is None
        assert await child(cluster, INGRESS, name) is None and await child(cluster, HPA, f"{name}-predictor") is None


# --- auth -------------------------------------------------------------------------------------------
async def test_auth_secret_is_mounted_and_never_read(cluster: Cluster, operator: Operator) -> None:
    await cluster.create(isvc(auth={"secretName": "flowers-tokens"}))
    blocked = await cluster.wait_condition(KIND, NAME, "Ready", "False", "AuthSecretMissing")
    assert "Secret 'flowers-tokens' (spec.auth.secretName) not found" in blocked["message"]
    assert "kubectl create secret generic flowers-tokens" in blocked["message"]
    assert await deployment(cluster) is None  # no pod that could not mount its Secret

    token = "s3cr3t-token-value-0123456789"
    await cluster.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "flowers-tokens"},
                          "stringData": {"token": token}, "data": {"old": "b2xkLXRva2Vu"}})
    await touch(cluster, 1)  # Secrets are not watched: the next reconciliation (or 30 s) sees it
    dep = await eventually(lambda: deployment(cluster), what="the Deployment once the Secret exists")
    pod = dep["spec"]["template"]["spec"]
    [container] = pod["containers"]
    [volume] = [v for v in pod["volumes"] if v.get("secret")]
    assert volume["secret"] == {"secretName": "flowers-tokens", "defaultMode": 0o440}
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": contract.MOUNT_AUTH_TOKENS, "readOnly": True}
    args = container["args"]
    assert args[args.index(contract.FLAG_AUTH_TOKENS) + 1] == contract.MOUNT_AUTH_TOKENS
    assert args[args.index(contract.FLAG_METRICS_PORT) + 1] == str(contract.DEFAULT_METRICS_PORT)
    assert {"name": "metrics", "containerPort": contract.DEFAULT_METRICS_PORT, "protocol": "TCP"} in container["ports"]
    await cluster.wait_condition(KIND, NAME, "Ready", "False", "DeploymentProgressing")

    # The operator looks at the Secret's metadata only (PartialObjectMetadata): nothing of it in status or events.
    meta = await cluster.client.get_metadata("v1", "secrets", cluster.namespace, "flowers-tokens")
    assert meta is not None and meta["metadata"]["name"] == "flowers-tokens" and "data" not in meta
    recorded = json.dumps([await cluster.get_cr(KIND, NAME), await cluster.events_for(NAME), dep])
    assert token not in recorded and "b2xkLXRva2Vu" not in recorded

    # Without spec.auth the pods no longer get the Secret.
    await cluster.patch_cr(KIND, NAME, {"spec": {"auth": None}})
    await spec_seen(cluster)
    dep = await deployment(cluster)
    assert dep is not None and contract.FLAG_AUTH_TOKENS not in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(v.get("secret") for v in dep["spec"]["template"]["spec"]["volumes"])


# --- autoscaling ------------------------------------------------------------------------------------
async def test_hpa_for_concurrency_and_cpu_and_its_conditions(cluster: Cluster, operator: Operator) -> None:
    await ascend_node(cluster, "npu-1", 2)
    await cluster.create(isvc(autoscaling={"maxReplicas": 3, "target": 2}))
    hpa = await eventually(lambda: child(cluster, HPA, DEPLOYMENT), what="the HPA")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["metrics"] == [{
        "type": "Pods",
        "pods": {"metric": {"name": contract.METRIC_INFLIGHT}, "target": {"type": "AverageValue", "averageValue": "2"}},
    }]
    dep = await eventually(lambda: deployment(cluster), what="the Deployment")
    assert dep["spec"]["replicas"] == 1  # starts at minReplicas
    # 3 replicas need 3 devices; the one node has 2.
    scaling = await cluster.wait_condition(KIND, NAME, "Autoscaling", "Unknown", "MaxReplicasAboveCapacity")
    assert "maxReplicas 3 needs 3 huawei.com/Ascend310 but the nodes can allocate 2" in scaling["message"]
    assert "at most 2 replica(s) can run" in scaling["message"] and "lower maxReplicas or add Ascend nodes" in scaling["message"]
    assert (await status(cluster))["autoscaler"] == {"kind": "HorizontalPodAutoscaler", "name": DEPLOYMENT}

    async def warned() -> list[dict[str, Any]]:
        return [e for e in await cluster.events_for(NAME) if e.get("reason") == "MaxReplicasAboveCapacity"]

    warnings = await eventually(warned, what="the capacity Event")
    assert warnings[0]["type"] == "Warning"

    # cpu, within capacity: the HPA follows; the controller reports it cannot read its metric, then that it can.
    await cluster.patch_cr(KIND, NAME, {"spec": {"autoscaling": {"maxReplicas": 2, "metric": "cpu", "target": 70}}})

    async def cpu_hpa() -> dict[str, Any] | None:
        h = await child(cluster, HPA, DEPLOYMENT)
        return h if h and h["spec"]["metrics"][0]["type"] == "Resource" else None

    hpa = await eventually(cpu_hpa, what="the HPA on cpu")
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    assert hpa["spec"]["maxReplicas"] == 2
    await cluster.wait_condition(KIND, NAME, "Autoscaling", "Unknown", "AutoscalerPending")
    await cluster.client.patch(*HPA, cluster.namespace, DEPLOYMENT, {"status": {"currentReplicas": 1, "desiredReplicas": 1, "conditions": [
        {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale", "message": "the HPA controller was able to get the target's current scale"},
        {"type": "ScalingActive", "status": "False", "reason": "FailedGetResourceMetric",
         "message": "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu"},
    ]}}, subresource="status")
    await touch(cluster, 1)  # autoscalers are polled (every 60 s while not ready), not watched
    failing = await cluster.wait_condition(KIND, NAME, "Autoscaling", "False", "AutoscalerNotReady")
    assert "FailedGetResourceMetric" in failing["message"] and "unable to get metrics for resource cpu" in failing["message"]
    await cluster.client.patch(*HPA, cluster.namespace, DEPLOYMENT, {"status": {"conditions": [
        {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale", "message": ""},
        {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound", "message": "computed from cpu resource utilization"},
    ]}}, subresource="status")
    await touch(cluster, 2)
    ready = await cluster.wait_condition(KIND, NAME, "Autoscaling", "True", "AutoscalerReady")
    assert "scales 1-2 replicas on CPU at 70 percent of the request" in ready["message"]

    # No autoscaling: the HPA goes, and spec.replicas is the operator's again.
    await cluster.patch_cr(KIND, NAME, {"spec": {"autoscaling": None, "replicas": 2}})
    await eventually(lambda: gone(cluster, HPA, DEPLOYMENT), what="the HPA deleted")
    seen = await spec_seen(cluster)
    assert "autoscaler" not in seen and not any(c["type"] == "Autoscaling" for c in seen["conditions"])
    dep = await deployment(cluster)
    assert dep is not None and dep["spec"]["replicas"] == 2


async def test_replicas_an_hpa_set_survive_reconciles(cluster: Cluster, operator: Operator) -> None:
    await ascend_node(cluster, "npu-1", 4)
    await cluster.create(isvc(autoscaling={"minReplicas": 1, "maxReplicas": 4}))
    await eventually(lambda: child(cluster, HPA, DEPLOYMENT), what="the HPA")
    await eventually(lambda: deployment(cluster), what="the Deployment")
    await roll_out(cluster, DEPLOYMENT)
    await cluster.wait_condition(KIND, NAME, "Ready", "True")
    # What the HPA controller does: scale the Deployment to 3. Until the ReplicaSet made the pods,
    # the Deployment has 1 (current, ready): a scale-up is no rollout, the service stays Ready.
    scaled = await cluster.client.patch("apps/v1", "deployments", cluster.namespace, DEPLOYMENT, {"spec": {"replicas": 3}})
    await cluster.client.patch("apps/v1", "deployments", cluster.namespace, DEPLOYMENT, {"status": {
        "observedGeneration": scaled["metadata"]["generation"], "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
    }}, subresource="status")
    await touch(cluster, 100)

    async def still_ready() -> dict[str, Any] | None:
        c = await cluster.condition(KIND, NAME, "Ready")
        return c if c and "1/3 replica(s) ready (autoscaling 1-4)" in c["message"] else None

    ready = await eventually(still_ready, what="Ready with 1 of the HPA's 3 replicas")
    assert ready["status"] == "True"
    await roll_out(cluster, DEPLOYMENT, ready=2)  # 3 pods, 2 ready: a Deployment event, so a reconciliation

    async def reported() -> dict[str, Any] | None:
        s = await status(cluster)
        return s if (s.get("replicas"), s.get("readyReplicas")) == (3, 2) else None

    seen = await eventually(reported, what="status.replicas 3, readyReplicas 2")
    ready = next(c for c in seen["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and "2/3 replica(s) ready (autoscaling 1-4)" in ready["message"]
    # The third pod finds no free device: the service still serves, and says why one pod waits.
    full = "0/1 nodes are available: 1 Insufficient huawei.com/Ascend310."
    await cluster.set_pod_status(f"{DEPLOYMENT}-v001-2", {
        "phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": full}],
    })

    async def waiting_pod() -> dict[str, Any] | None:
        c = await cluster.condition(KIND, NAME, "Ready")
        return c if c and full in c["message"] else None

    ready = await eventually(waiting_pod, what="Ready naming the pod that waits for a device")
    assert ready["status"] == "True" and "the others wait: pod flowers-predictor-v001-2 cannot be scheduled" in ready["message"]

    # Reconciliations of every kind: annotation changes, and spec changes that replace the Deployment.
    for n in range(3):
        await touch(cluster, n)
        dep = await deployment(cluster)
        assert dep is not None and dep["spec"]["replicas"] == 3, f"after touch {n}"
    for body in (1048576, 2097152):
        await cluster.patch_cr(KIND, NAME, {"spec": {"maxBodyBytes": body}})
        await spec_seen(cluster)
        dep = await deployment(cluster)
        assert dep is not None
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index(contract.FLAG_MAX_BODY_BYTES) + 1] == str(body)  # the Deployment was replaced...
        assert dep["spec"]["replicas"] == 3  # ...with the HPA's count
    # A new maximum below the live count: clamped, as the HPA would.
    await cluster.patch_cr(KIND, NAME, {"spec": {"autoscaling": {"maxReplicas": 2}}})

    async def clamped() -> dict[str, Any] | None:
        dep = await deployment(cluster)
        return dep if dep and dep["spec"]["replicas"] == 2 else None

    await eventually(clamped, what="the Deployment clamped to maxReplicas 2")
    hpa = await child(cluster, HPA, DEPLOYMENT)
    assert hpa is not None and hpa["spec"]["maxReplicas"] == 2


async def test_keda_scaled_object_once_its_crd_is_served(backend: Backend, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # KEDA installed: its CRD created through the API, as `helm install keda` would (removed after a [real] run).
    await cluster.client.create("apiextensions.k8s.io/v1", "customresourcedefinitions", None, yaml.safe_load(KEDA_CRD.read_text()))
    await wait_served(cluster, *SCALED_OBJECT)
    async with operator_running(backend, monkeypatch, PROMETHEUS_ADDRESS=PROMETHEUS):
        await cluster.create(isvc(autoscaling={"minReplicas": 2, "maxReplicas": 5, "target": 3}))
        scaled = await eventually(lambda: child(cluster, SCALED_OBJECT, DEPLOYMENT), what="the ScaledObject")
        spec = scaled["spec"]
        assert spec["scaleTargetRef"]["name"] == DEPLOYMENT
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 5)
        [trigger] = spec["triggers"]
        assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
        assert trigger["metadata"]["serverAddress"] == PROMETHEUS and trigger["metadata"]["threshold"] == "3"
        assert trigger["metadata"]["query"] == (
            f'sum({contract.METRIC_INFLIGHT}{{namespace="{cluster.namespace}",pod=~"{DEPLOYMENT}-[a-z0-9]+-[a-z0-9]+"}})'
        )
        assert await gone(cluster, HPA, DEPLOYMENT)  # KEDA makes its own HPA from the ScaledObject
        assert (await spec_seen(cluster))["autoscaler"] == {"kind": "ScaledObject", "name": DEPLOYMENT}
        await cluster.client.patch(*SCALED_OBJECT, cluster.namespace, DEPLOYMENT, {"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": "ScaledObject is defined correctly and is ready for scaling"},
        ]}}, subresource="status")
        await touch(cluster, 1)
        await cluster.wait_condition(KIND, NAME, "Autoscaling", "True", "MaxReplicasAboveCapacity")  # no Ascend node here

        # cpu needs no Prometheus: a plain HPA, and the ScaledObject goes.
        await cluster.patch_cr(KIND, NAME, {"spec": {"autoscaling": {"metric": "cpu", "target": None}}})
        await eventually(lambda: child(cluster, HPA, DEPLOYMENT), what="the HPA on cpu")
        await eventually(lambda: gone(cluster, SCALED_OBJECT, DEPLOYMENT), what="the ScaledObject deleted")
        assert (await spec_seen(cluster))["autoscaler"]["kind"] == "HorizontalPodAutoscaler"

        # Back to concurrency, then no autoscaling at all: nothing is left.
        await cluster.patch_cr(KIND, NAME, {"spec": {"autoscaling": {"metric": "concurrency"}}})
        await eventually(lambda: child(cluster, SCALED_OBJECT, DEPLOYMENT), what="the ScaledObject again")
        await eventually(lambda: gone(cluster, HPA, DEPLOYMENT), what="the HPA deleted")
        await cluster.patch_cr(KIND, NAME, {"spec": {"autoscaling": None}})
        await eventually(lambda: gone(cluster, SCALED_OBJECT, DEPLOYMENT), what="the ScaledObject deleted")
