"""Online serving on the real node: a canary at 20 percent and its GitOps promotion under load, and token auth."""

from __future__ import annotations

import json
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ascend_mlops.api import constants, contract
from ascend_mlops.builders import inference
from tests.cluster import realcluster as rc
from tests.cluster.conftest import SMALL_RESOURCES, Seed

NAME = "flowers"


def model(seed_version: str, root: str = "runs/flowers-resnet50") -> dict[str, str]:
    version = f"pvc://flowers-data/{root}/{seed_version}"
    return {"uri": f"{version}/{contract.OM_OUTPUT_SUBDIR}", "labels": f"{version}/{contract.LABELS_FILE}"}


def service(namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION, "kind": constants.INFERENCE_SERVICE,
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {"runtime": "acl", "resources": SMALL_RESOURCES, **spec},
    }


def second_version(seed: Seed, namespace: str) -> str:
    """The seed's model copied as another version whose class names end in -v2: each answer says who gave it."""
    target = seed.data / "runs" / f"canary-{namespace}" / "V002"
    shutil.copytree(seed.data / "runs" / "flowers-resnet50" / seed.version, target)
    labels = target / contract.LABELS_FILE
    labels.write_text("".join(f"{line.strip()}-v2\n" for line in labels.read_text().splitlines() if line.strip()))
    rc.chown_for_pods(target.parent)
    return f"runs/canary-{namespace}"


@dataclass
class Load:
    """One client POSTing the photo through the Service without pause, until stopped (at most 15 minutes)."""

    url: str
    photo: Path
    answers: list[str] = field(default_factory=list)  # predicted labels, in order
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        body, headers = rc.multipart_image(self.photo)
        deadline = time.monotonic() + 900
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                status, _, answer = rc.http("POST", self.url + "/", body, headers, timeout=30)
            except OSError as e:
                self.failures.append(f"{type(e).__name__}: {e}")
                continue
            if status != 200:
                self.failures.append(f"{status}: {answer[:200]!r}")
            else:
                self.answers.append(json.loads(answer)["predicted_label"])

    def since(self, start: int) -> list[str]:
        return self.answers[start:]


def traffic(cluster: rc.Cluster, namespace: str) -> dict[str, int]:
    isvc = cluster.get(constants.INFERENCE_SERVICE, NAME, namespace) or {}
    return {t["revision"]: t["percent"] for t in (isvc.get("status") or {}).get("traffic") or []}


def test_a_canary_at_20_percent_and_its_promotion_under_load_fail_no_request(cluster: rc.Cluster, seed: Seed) -> None:
    with cluster.namespace("canary") as ns:
        cluster.claim(ns, "flowers-data", host_dir=seed.data)
        v2_root = second_version(seed, ns)
        stable, canary = model(seed.version), model("V002", v2_root)
        cluster.apply(service(ns, model=stable, replicas=4))
        cluster.wait_condition(constants.INFERENCE_SERVICE, NAME, ns, "Ready", timeout=600)
        load = Load(rc.http_url(cluster, inference.service_name(NAME), ns), seed.photo)
        thread = threading.Thread(target=load.run, daemon=True)
        thread.start()
        try:
            rc.eventually(lambda: len(load.answers) >= 20, timeout=120, what="answers from the stable revision")
            assert not any(a.endswith("-v2") for a in load.answers)

            # The canary at 20 percent: without a Gateway, 4 stable and 1 canary ready replicas behind one Service.
            cluster.apply(service(ns, model=stable, replicas=4, canary={**canary, "trafficPercent": 20, "replicas": 1}))
            rc.eventually(lambda: traffic(cluster, ns) == {"stable": 80, "canary": 20}, timeout=600,
                          what="status.traffic stable 80 / canary 20")
            start = len(load.answers)
            rc.eventually(lambda: len(load.since(start)) >= 150, timeout=300, what="150 answers with the canary in")
            share = sum(a.endswith("-v2") for a in load.since(start)) / len(load.since(start))
            assert 0.05 < share < 0.45, share  # 1 of 5 endpoints; kube-proxy picks at random
            cluster.wait_condition(constants.INFERENCE_SERVICE, NAME, ns, "Ready", timeout=60)

            # The GitOps promotion: the canary's model becomes spec.model and spec.canary goes, in one apply.
            cluster.apply(service(ns, model=canary, replicas=4))

            def promoted() -> bool:
                answers = load.answers[-40:]
                isvc = cluster.get(constants.INFERENCE_SERVICE, NAME, ns) or {}
                ready = any(c["type"] == "Ready" and c["status"] == "True" for c in isvc.get("status", {}).get("conditions") or [])
                return ready and len(answers) == 40 and all(a.endswith("-v2") for a in answers) and traffic(cluster, ns) == {"stable": 100}

            rc.eventually(promoted, timeout=600, what="every answer from the promoted model, Ready")
            # Then the canary, drained, goes (still under load: its removal fails no request either).
            rc.eventually(lambda: {d["metadata"]["name"] for d in cluster.list("deployments", ns)} == {inference.deployment_name(NAME)},
                          timeout=90, what="only the stable Deployment left after the promotion")
        finally:
            load.stop.set()
            thread.join(60)
        print(f"canary on the real node: {len(load.answers)} requests answered, {len(load.failures)} failed, "
              f"canary share at 20 percent {share:.2f}")
        assert load.failures == [], load.failures[:10]


def test_a_token_secret_made_by_kubectl_guards_the_service(cluster: rc.Cluster, seed: Seed) -> None:
    token = secrets.token_hex(32)
    with cluster.namespace("auth") as ns:
        cluster.claim(ns, "flowers-data", host_dir=seed.data)
        # kubectl sends this to the real apiserver as protobuf.
        cluster.kubectl("create", "secret", "generic", "flowers-tokens", "-n", ns, f"--from-literal=current={token}")
        cluster.apply(service(ns, model=model(seed.version), replicas=1, auth={"secretName": "flowers-tokens"}))
        cluster.wait_condition(constants.INFERENCE_SERVICE, NAME, ns, "Ready", timeout=600)
        url = rc.http_url(cluster, inference.service_name(NAME), ns) + "/"
        body, headers = rc.multipart_image(seed.photo)
        status, answer_headers, answer = rc.http("POST", url, body, headers)
        assert status == 401 and "error" in json.loads(answer)
        assert answer_headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert rc.http("POST", url, body, {**headers, "Authorization": "Bearer wrong"})[0] == 401
        for auth in ({"Authorization": f"Bearer {token}"}, {"X-Auth-Token": token}):
            status, _, answer = rc.http("POST", url, body, {**headers, **auth})
            assert status == 200, answer[:300]
            assert json.loads(answer)["predicted_label"]
        # The token is nowhere but in the Secret.
        isvc = cluster.kubectl("get", constants.INFERENCE_SERVICE, NAME, "-n", ns, "-o", "json")
        events = cluster.kubectl("get", "events", "-n", ns, "-o", "json")
        [pod] = [p["metadata"]["name"] for p in cluster.list("pods", ns) if rc.owned_by(p, constants.INFERENCE_SERVICE, NAME)]
        logs = cluster.kubectl("logs", "-n", ns, pod)
        for text in (isvc, events, logs, cluster.all_operator_logs()):
            assert token not in text
