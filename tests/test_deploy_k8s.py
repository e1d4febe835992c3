"""deploy/k8s: every manifest against the Kubernetes API schemas (offline, from the
kubernetes-validate wheel), and the numbers that must agree across files and with the
server (ports, drain grace, probe service names, options, metric names) checked together."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from proto import kvserve_pb2 as pb
from server.cli import parse_args
from server.config import ServeConfig
from server.metrics import Metrics
from tests.support import tools
from tests.support.prom_server import promtool

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
# The oldest release with every field used (the preStop `sleep` action is beta, on by
# default, from 1.30), and the newest the validator knows (catches removed APIs).
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
GENERATION = pb.DESCRIPTOR.services_by_name["Generation"].full_name
HPA_METRIC = "kvserve_requests_waiting"
KUBECTL = tools.path("kubectl")


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def base() -> dict[str, dict]:
    """The base's objects by kind, read from the files its kustomization lists."""
    kustomization = load(K8S / "base" / "kustomization.yaml")[0]
    docs = [d for name in kustomization["resources"] for d in load(K8S / "base" / name)]
    return {d["kind"]: d for d in docs}


def kustomize(overlay: str) -> dict[str, dict]:
    """What `kubectl apply -k deploy/k8s/<overlay>` would send (kubectl's built-in kustomize)."""
    if KUBECTL is None:
        pytest.skip(tools.missing("kubectl"))
    out = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return {d["kind"]: d for d in yaml.safe_load_all(out) if d}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env(deployment: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(deployment)["env"]}


def serve_config(deployment: dict, monkeypatch) -> ServeConfig:
    """The server's own option parser applied to the pod's environment, as the pod would."""
    for name, value in env(deployment).items():
        monkeypatch.setenv(name, value)
    return parse_args([])


def adapter_rules() -> tuple[list[dict], list[dict]]:
    values = load(K8S / "prometheus-adapter" / "values.yaml")[0]
    config_map = load(K8S / "prometheus-adapter" / "config-map.yaml")[0]
    return values["rules"]["custom"], yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def every_manifest() -> list[tuple[str, dict]]:
    files = sorted((K8S / "base").glob("*.yaml")) + [K8S / "prometheus-adapter/config-map.yaml"]
    return [
        (f"{path.relative_to(K8S)}:{doc['kind']}", doc)
        for path in files
        if path.name != "kustomization.yaml"
        for doc in load(path)
    ]


def label(value) -> str:
    return value if isinstance(value, str) else ""


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "doc"), every_manifest(), ids=label)
def test_manifest_matches_the_kubernetes_schema(name, doc, version):
    # strict: an unknown field (a typo, a misplaced key) fails instead of being ignored
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_overlays_match_the_schema(version):
    for overlay in ("base", "gpu"):
        for doc in kustomize(overlay).values():
            kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_lists_every_base_manifest():
    listed = set(load(K8S / "base" / "kustomization.yaml")[0]["resources"])
    on_disk = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert set(kustomize("base")) == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
    }


def test_selectors_and_references_agree():
    objs = base()
    deployment = objs["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        objs["Service"]["spec"]["selector"],
        objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    target = objs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        "Deployment",
        deployment["metadata"]["name"],
    )
    claim = deployment["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]
    assert claim["claimName"] == objs["PersistentVolumeClaim"]["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    assert mounts["model"] == env(deployment)["KVSERVE_MODEL"]


def test_pod_environment_is_valid_server_options(monkeypatch):
    deployment = base()["Deployment"]
    fields = set(ServeConfig.__dataclass_fields__)
    for name in env(deployment):
        assert name.removeprefix("KVSERVE_").lower() in fields, f"{name}: no such server option"
    config = serve_config(deployment, monkeypatch)
    assert (config.host, config.metrics_host) == ("0.0.0.0", "0.0.0.0")


def test_probes_use_grpc_health_on_the_serving_port(monkeypatch):
    deployment = base()["Deployment"]
    c = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["grpc"] == serve_config(deployment, monkeypatch).port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = c[probe]["grpc"]
        assert check["port"] == ports["grpc"]
        assert check.get("service", "") in ("", GENERATION)  # the names the server sets
    # readiness must follow the drain at once; liveness must never fire during one
    assert c["readinessProbe"]["failureThreshold"] == 1
    live = c["livenessProbe"]
    grace = serve_config(deployment, monkeypatch).grace_seconds
    assert live["periodSeconds"] * live["failureThreshold"] > grace


def test_termination_grace_covers_prestop_and_drain(monkeypatch):
    deployment = base()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = serve_config(deployment, monkeypatch).grace_seconds
    # SIGKILL comes terminationGracePeriodSeconds after the preStop hook starts
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 5


def test_resources_are_requested():
    resources = container(base()["Deployment"])["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


def test_service_is_headless_with_the_pod_ports(monkeypatch):
    objs = base()
    service, deployment = objs["Service"], objs["Deployment"]
    assert service["spec"]["clusterIP"] == "None"  # DNS answers with every ready pod
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports and port["port"] == ports[port["targetPort"]]
    config = serve_config(deployment, monkeypatch)
    assert ports["metrics"] == config.metrics_port
    notes = deployment["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/port"] == str(config.metrics_port)
    assert notes["prometheus.io/path"] == config.metrics_path


def test_service_monitor_scrapes_the_service_metrics_port(monkeypatch):
    (monitor,) = load(K8S / "servicemonitor.yaml")
    service = base()["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and "metrics" in ports
    assert endpoint["path"] == serve_config(base()["Deployment"], monkeypatch).metrics_path


def test_hpa_scales_on_a_metric_the_server_exports_and_the_adapter_serves():
    (metric,) = base()["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == HPA_METRIC
    exported = {m.name for m in Metrics().registry.collect()}
    assert HPA_METRIC in exported
    from_values, from_config_map = adapter_rules()
    assert from_values == from_config_map  # Helm and plain-manifest installs agree
    (rule,) = from_values
    assert rule["name"]["as"] == HPA_METRIC and HPA_METRIC in rule["seriesQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_adapter_queries_are_valid_promql(tmp_path):
    if (reason := tools.missing("promtool")) is not None:
        pytest.skip(reason)
    (rule,) = adapter_rules()[0]
    # what the adapter sends for `kubectl get --raw .../pods/*/kvserve_requests_waiting`
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", HPA_METRIC)
        .replace("<<.LabelMatchers>>", 'namespace="default",pod=~"kvserve-a|kvserve-b"')
        .replace("<<.GroupBy>>", "pod")
    )
    exprs = [query, rule["seriesQuery"]]
    rules = {
        "groups": [
            {
                "name": "adapter",
                "rules": [{"record": f"check:{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_overlay_asks_for_one_gpu_and_the_cuda_image(monkeypatch):
    objs = kustomize("gpu")
    deployment = objs["Deployment"]
    c = container(deployment)
    assert c["image"].endswith(":cuda")
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert serve_config(deployment, monkeypatch).provider == "cuda"
    # everything else comes from the base: probes, drain, the HPA and the Service
    cpu = base()["Deployment"]
    for key in ("startupProbe", "readinessProbe", "livenessProbe", "lifecycle", "ports"):
        assert c[key] == container(cpu)[key]
    assert {"HorizontalPodAutoscaler", "Service"} <= objs.keys()
