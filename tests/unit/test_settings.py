from __future__ import annotations

import pytest

from ascend_mlops import settings as s
from ascend_mlops.settings import Settings, SettingsError


def test_defaults_match_the_contract() -> None:
    cfg = Settings.from_env({})
    assert cfg.namespaces == ()
    assert cfg.all_namespaces
    assert cfg.trainer_image == "ascend-mlops/trainer:0.1.0"
    assert cfg.converter_image == "ascend-mlops/converter:0.1.0"
    assert cfg.server_image == "ascend-mlops/server:0.1.0"
    assert cfg.image_pull_policy == "IfNotPresent"
    assert cfg.accelerator_resource == "huawei.com/Ascend310"
    assert dict(cfg.accelerator_node_selector) == {"accelerator": "huawei-Ascend310"}
    assert cfg.accelerator_toleration_key == "huawei.com/Ascend310"
    assert cfg.driver_mounts == "runtime"
    assert cfg.simulator is False
    assert (cfg.metrics_port, cfg.health_port) == (8000, 8080)
    assert cfg.log_format == "plain"
    assert (cfg.storage_secret, cfg.scratch_size) == ("", "20Gi")
    assert (cfg.domain, cfg.ingress_class, cfg.url_scheme, cfg.prometheus_address) == ("", "", "http", "")
    assert cfg.pod_start_timeout == 300


def test_every_variable_is_read() -> None:
    cfg = Settings.from_env(
        {
            s.ENV_NAMESPACES: " ml , team-b,ml ",
            s.ENV_TRAINER_IMAGE: "registry.local/t:1",
            s.ENV_CONVERTER_IMAGE: "registry.local/c:1",
            s.ENV_SERVER_IMAGE: "registry.local/s:1",
            s.ENV_IMAGE_PULL_POLICY: "Always",
            s.ENV_ACCELERATOR_RESOURCE: "huawei.com/Ascend310P",
            s.ENV_ACCELERATOR_NODE_SELECTOR: "accelerator=huawei-Ascend310P, host-arch=huawei-arm",
            s.ENV_ACCELERATOR_TOLERATION_KEY: "huawei.com/Ascend310P",
            s.ENV_DRIVER_MOUNTS: "HostPath",
            s.ENV_SIMULATOR: "true",
            s.ENV_METRICS_PORT: "0",
            s.ENV_HEALTH_PORT: "9090",
            s.ENV_LOG_FORMAT: "json",
            s.ENV_STORAGE_SECRET: "obs-creds",
            s.ENV_SCRATCH_SIZE: "100Gi",
            s.ENV_GATEWAY: "gateway-system/public",
            s.ENV_DOMAIN: "Models.Example.com.",
            s.ENV_INGRESS_CLASS: "nginx",
            s.ENV_URL_SCHEME: "HTTPS",
            s.ENV_PROMETHEUS_ADDRESS: "http://prometheus-operated.monitoring.svc:9090/",
            s.ENV_POD_START_TIMEOUT: " 45 ",
        }
    )
    assert cfg.pod_start_timeout == 45
    assert cfg.gateway == ("gateway-system", "public") and cfg.domain == "models.example.com"
    assert (cfg.ingress_class, cfg.url_scheme) == ("nginx", "https")
    assert cfg.prometheus_address == "http://prometheus-operated.monitoring.svc:9090"
    assert cfg.namespaces == ("ml", "team-b")
    assert cfg.trainer_image == "registry.local/t:1"
    assert cfg.converter_image == "registry.local/c:1"
    assert cfg.server_image == "registry.local/s:1"
    assert cfg.image_pull_policy == "Always"
    assert cfg.accelerator_resource == "huawei.com/Ascend310P"
    assert dict(cfg.accelerator_node_selector) == {"accelerator": "huawei-Ascend310P", "host-arch": "huawei-arm"}
    assert cfg.accelerator_toleration_key == "huawei.com/Ascend310P"
    assert cfg.driver_mounts == "hostpath"
    assert cfg.simulator is True
    assert (cfg.metrics_port, cfg.health_port) == (0, 9090)
    assert cfg.log_format == "json"
    assert (cfg.storage_secret, cfg.scratch_size) == ("obs-creds", "100Gi")


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        (s.ENV_NAMESPACES, "Bad_NS", "not a valid namespace"),
        (s.ENV_IMAGE_PULL_POLICY, "Sometimes", "IfNotPresent"),
        (s.ENV_ACCELERATOR_RESOURCE, "Ascend310", "extended resource"),
        (s.ENV_ACCELERATOR_NODE_SELECTOR, "accelerator", "KEY=VALUE"),
        (s.ENV_ACCELERATOR_NODE_SELECTOR, "accelerator=bad value", "label value"),
        (s.ENV_ACCELERATOR_TOLERATION_KEY, "bad key!", "label/taint key"),
        (s.ENV_DRIVER_MOUNTS, "privileged", "runtime, hostpath"),
        (s.ENV_SIMULATOR, "maybe", "not a boolean"),
        (s.ENV_METRICS_PORT, "http", "not a port"),
        (s.ENV_HEALTH_PORT, "70000", "out of range"),
        (s.ENV_LOG_FORMAT, "xml", "plain, json"),
        (s.ENV_STORAGE_SECRET, "S3_Creds", "not a Secret name"),
        (s.ENV_SCRATCH_SIZE, "lots", "not a size"),
        (s.ENV_SCRATCH_SIZE, "-1Gi", "not a size"),
        (s.ENV_POD_START_TIMEOUT, "5m", "not a number of seconds"),
        (s.ENV_POD_START_TIMEOUT, "0", "at least 1"),
        (s.ENV_INGRESS_CLASS, "Nginx_Class", "not an IngressClass name"),
        (s.ENV_URL_SCHEME, "ftp", "http, https"),
        (s.ENV_PROMETHEUS_ADDRESS, "prometheus:9090", "not an http(s) URL"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert name in str(info.value)
    assert fragment in str(info.value)


def test_empty_node_selector_is_allowed() -> None:
    assert dict(Settings.from_env({s.ENV_ACCELERATOR_NODE_SELECTOR: ""}).accelerator_node_selector) == {}
