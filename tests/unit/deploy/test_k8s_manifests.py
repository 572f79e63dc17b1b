"""deploy/k8s/: every object valid for two current Kubernetes releases (kubernetes-validate, strict), and what a
schema cannot check: the objects agree with each other (selectors, labels, named ports, names referenced), with
the image (deploy/Dockerfile: its user, port, entrypoint, state directory), with the service (probe paths, the
command lines the CLI accepts, the configuration shipml loads, shutdown times) and with the alerting rules
(the PrometheusRule is rules.yml's groups, which promtool accepts)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml

from shipml.cli.app import app
from shipml.config.loading import settings_from_mapping
from shipml.server.openapi import OPERATIONS
from tests.support.components import missing

ROOT = Path(__file__).parents[3]
K8S = ROOT / "deploy" / "k8s"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
RELEASES = ("1.36.0", "1.37.0")  # the two newest Kubernetes releases kubernetes-validate knows
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}  # the Prometheus Operator's: checked below, not by a schema


def _objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


OBJECTS = _objects()


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in OBJECTS if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for o in OBJECTS:
        if o["kind"] == "Deployment":
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield o["metadata"]["name"], o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("release", RELEASES)
def test_every_object_is_valid_for_the_release_in_strict_mode(release: str) -> None:
    kinds = {o["kind"] for o in OBJECTS}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret",
            "CronJob", "ServiceMonitor", "PrometheusRule"} <= kinds  # fmt: skip
    for o in OBJECTS:
        if o["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(o, release, strict=True)


def test_selectors_labels_and_named_ports_agree() -> None:
    deployment, service = _one("Deployment", "shipml"), _one("Service", "shipml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert _matches(service["spec"]["selector"], pod_labels)
    assert _matches(_one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    for name, _spec in _pod_specs():  # the jobs' pods never receive the Service's traffic
        if name != "shipml":
            assert not _matches(service["spec"]["selector"], _pod_labels_of(name)), name
    container_ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    monitor = _one("ServiceMonitor")
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    target = _one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "shipml")
    # rules.yml selects up{job="shipml"}: the Operator names the job after the Service
    assert 'job="shipml"' in RULES.read_text() and service["metadata"]["name"] == "shipml"


def _pod_labels_of(name: str) -> dict[str, str]:
    o = next(o for o in OBJECTS if o["metadata"]["name"] == name)
    template = o["spec"]["jobTemplate"]["spec"]["template"] if o["kind"] == "CronJob" else o["spec"]["template"]
    labels: dict[str, str] = template["metadata"]["labels"]
    return labels


def test_every_configmap_secret_and_volume_referenced_exists() -> None:
    configmaps = {o["metadata"]["name"] for o in OBJECTS if o["kind"] == "ConfigMap"}
    secrets = {o["metadata"]["name"] for o in OBJECTS if o["kind"] == "Secret"}
    for name, spec in _pod_specs():
        volumes = {v["name"]: v for v in spec["volumes"]}
        for v in volumes.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, name
        for c in spec["containers"]:
            assert {m["name"] for m in c["volumeMounts"]} <= set(volumes), name
            assert {e["secretRef"]["name"] for e in c.get("envFrom", [])} <= secrets, name


def _dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_every_pod_runs_as_the_images_numeric_user_on_a_read_only_root() -> None:
    uid = int(re.search(r"--uid (\d+)", _dockerfile()).group(1))  # type: ignore[union-attr]
    assert re.search(rf"^USER {uid}:{uid}$", _dockerfile(), re.M)  # numeric: runAsNonRoot can check it
    state = re.findall(r"^WORKDIR (\S+)", _dockerfile(), re.M)[-1]  # the state directory the service runs in
    for name, spec in _pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
            assert writable == {state, "/tmp"}, (name, writable)
            emptydirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
            assert {m["name"] for m in c["volumeMounts"] if not m.get("readOnly")} <= emptydirs, name


def _settings_of_the_pods() -> Any:
    config = yaml.safe_load(_one("ConfigMap", "shipml-config")["data"]["shipml.yaml"])
    env = _one("Secret", "shipml-secrets")["stringData"]
    for key, value in env.items():  # SHIPML_A__B=... overrides a.b, as pydantic-settings reads the environment
        section, _, field = key.removeprefix("SHIPML_").lower().partition("__")
        config.setdefault(section, {})[field] = yaml.safe_load(value)
    return settings_from_mapping(config, "deploy/k8s")


def test_shipml_loads_the_configmap_with_the_secrets_environment() -> None:
    settings = _settings_of_the_pods()
    assert settings.serve.model and settings.store.uri.startswith("postgresql+psycopg://")
    assert settings.auth.keys and settings.monitor.interval_s == 0  # the CronJob runs the drift job


def test_the_server_container_is_the_images_entrypoint_with_arguments_the_cli_accepts() -> None:
    assert re.search(r'^ENTRYPOINT \["shipml", "serve"\]', _dockerfile(), re.M)
    exposed = int(re.search(r"^EXPOSE (\d+)", _dockerfile(), re.M).group(1))  # type: ignore[union-attr]
    container = _one("Deployment", "shipml")["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container  # the image's entrypoint
    assert {p["containerPort"] for p in container["ports"]} == {exposed}
    _parses(["serve", *container["args"]])
    for _, spec in _pod_specs():
        for c in spec["containers"]:
            if "command" in c:
                assert c["command"][0] == "shipml"
                _parses(c["command"][1:])
                assert "/etc/shipml/shipml.yaml" in c["command"]


def _parses(argv: list[str]) -> None:
    """The CLI parses ``argv`` (its command exists, every option too, with valid values) without running it."""
    group: Any = typer.main.get_command(app)
    ctx = group.make_context("shipml", list(argv), resilient_parsing=False)
    path = list(argv)
    while hasattr(group, "commands"):
        name, command, rest = group.resolve_command(ctx, path)
        ctx = command.make_context(name, rest, parent=ctx)
        group, path = command, rest


def test_probes_ask_the_services_own_health_endpoints_and_shutdown_fits_the_grace_period() -> None:
    spec = _one("Deployment", "shipml")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    paths = {path for (_method, path) in OPERATIONS}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live" in paths
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready" in paths
    assert container["startupProbe"]["httpGet"]["path"] in paths
    serve = _settings_of_the_pods().serve
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert serve.drain_s > 0  # the service itself answers not-ready first
    assert spec["terminationGracePeriodSeconds"] > pre_stop + serve.drain_s + serve.grace_period_s


def test_the_cronjobs_never_overlap_and_a_verdict_is_not_retried() -> None:
    jobs = [o for o in OBJECTS if o["kind"] == "CronJob"]
    assert jobs
    for job in jobs:
        assert job["spec"]["concurrencyPolicy"] == "Forbid", job["metadata"]["name"]
    drift = _one("CronJob", "shipml-drift")["spec"]["jobTemplate"]["spec"]
    rule = drift["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and set(rule["onExitCodes"]["values"]) == {1, 2}  # exit 1: drift found
    prune = _one("CronJob", "shipml-prune")["spec"]["jobTemplate"]["spec"]
    rule = prune["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and set(rule["onExitCodes"]["values"]) == {2}  # refused: tomorrow again
    # the replicas make partitions but never prune themselves: the CronJob is the one pruner
    assert _settings_of_the_pods().store.retention.predictions is None


def _render() -> Any:
    spec = importlib.util.spec_from_file_location("render_rules", K8S / "render_rules.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_prometheusrule_is_rules_yml_made_by_make_k8s_rules(tmp_path: Path) -> None:
    committed = (K8S / "prometheusrule.yaml").read_text()
    assert committed == _render().render(RULES.read_text()), "rules.yml changed: run `make k8s-rules`"
    groups = _one("PrometheusRule")["spec"]["groups"]
    assert groups == yaml.safe_load(RULES.read_text())["groups"]
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool is not installed (Debian: apt-get install prometheus; `make test` does it as root)")
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump({"groups": groups}))
    checked = subprocess.run([promtool, "check", "rules", str(extracted)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _readme_commands() -> list[str]:
    """The bash block of the README's "### On Kubernetes", line by line."""
    section = (ROOT / "README.md").read_text().split("### On Kubernetes", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "README.md: no bash block under '### On Kubernetes'"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readmes_kubernetes_commands_as_typed() -> None:
    """The README's validation line runs as typed from the repository's root (a shell expands its glob) and passes;
    its `kubectl apply -f deploy/k8s/` (no cluster here) takes every manifest this module checks, and nothing else
    kubectl would read (it reads .yaml, .yml and .json files: render_rules.py is not one)."""
    validate, apply = _readme_commands()
    exe = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    assert exe is not None
    done = subprocess.run(
        ["bash", "-c", validate], cwd=ROOT, capture_output=True, text=True, check=False,
        env={"PATH": f"{Path(exe).parent}:/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    passed = set(re.findall(r"^INFO (\S+) passed", done.stdout + done.stderr, re.M))
    assert passed == {f"deploy/k8s/{p.name}" for p in K8S.glob("*.yaml") if _kind(p) not in CUSTOM_KINDS}, passed
    assert apply == "kubectl apply -f deploy/k8s/"
    read_by_kubectl = {p.name for p in K8S.iterdir() if p.suffix in (".yaml", ".yml", ".json")}
    assert read_by_kubectl == {p.name for p in K8S.glob("*.yaml")} and len(read_by_kubectl) == len(OBJECTS)


def _kind(path: Path) -> str:
    return str(yaml.safe_load(path.read_text())["kind"])
