"""deploy/kubernetes: the base's manifests and the rendered example overlay.

Schemas: kubernetes-validate (a dev dependency) bundles the Kubernetes JSON
schemas; every object is validated strictly (no unknown fields) against
KUBERNETES_VERSION. KEDA's ScaledObject/TriggerAuthentication have no schema
there: they get structural checks. Rendering needs ``kustomize`` (PATH or
GOPATH/bin: ``go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1``) or
``kubectl kustomize``; without either the rendered-overlay tests are skipped and
the base's files are still checked as written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from exectrack.consumer.settings import Settings
from tests.support.deploy import (
    KUBE_BASE,
    KUBE_OVERLAY,
    base_resources,
    kustomize_command,
    pod_spec,
    render,
)

KUBERNETES_VERSION = "1.30.0"  # the oldest minor still supported upstream when written
PARTITIONS = Settings().kafka.partitions
SHUTDOWN_TIMEOUT_S = Settings().shutdown_timeout_s
KUSTOMIZE = kustomize_command()
needs_kustomize = pytest.mark.skipif(
    KUSTOMIZE is None,
    reason="no kustomize: go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1, or kubectl",
)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    assert KUSTOMIZE is not None
    return render(KUBE_OVERLAY, KUSTOMIZE)


def by_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def named(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in by_kind(resources, kind) if r["metadata"]["name"] == name]
    return found


def settings_env() -> dict[str, str]:
    lines = (KUBE_BASE / "settings.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def validate(resources: list[dict[str, Any]]) -> None:
    for resource in resources:
        if resource["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_base_manifests_match_the_kubernetes_schemas() -> None:
    validate(base_resources())


@needs_kustomize
def test_overlay_renders_and_matches_the_kubernetes_schemas(rendered: list[dict[str, Any]]) -> None:
    kinds = {r["kind"] for r in rendered}
    assert {
        "Deployment",
        "Job",
        "CronJob",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
    } <= kinds
    assert {r["metadata"].get("namespace") for r in rendered if r["kind"] != "Namespace"} == {
        "exectrack"
    }
    validate(rendered)


@needs_kustomize
def test_overlay_references_resolve(rendered: list[dict[str, Any]]) -> None:
    names = {(r["kind"], r["metadata"]["name"]) for r in rendered}
    for resource in rendered:
        spec = pod_spec(resource)
        if spec is None:
            continue
        for container in spec["containers"]:
            assert container["image"] == "example/exectrack:0.1.0"
            for source in container.get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in names
        for volume in spec["volumes"]:
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in names
    (secret,) = by_kind(rendered, "Secret")
    # keys are settings files (EXECTRACK_SECRETS_DIR): nested names joined by __
    assert {"database__url", "kafka__sasl_password"} <= set(secret["data"])
    deployment = named(rendered, "Deployment", "exectrack-consumer")
    assert "replicas" not in deployment["spec"]  # KEDA owns it in this overlay
    assert "read__tokens" in secret["data"]  # the read side listens on 0.0.0.0: tokens needed


@needs_kustomize
def test_keda_scaled_object(rendered: list[dict[str, Any]]) -> None:
    (scaled,) = by_kind(rendered, "ScaledObject")
    deployment = named(rendered, "Deployment", "exectrack-consumer")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= PARTITIONS
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == settings_env()["EXECTRACK_GROUP_ID"]
    assert meta["topic"] == settings_env()["EXECTRACK_KAFKA__TOPIC"]
    assert int(meta["lagThreshold"]) > 0
    (auth,) = by_kind(rendered, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (secret,) = by_kind(rendered, "Secret")
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["data"]


def test_settings_are_real_settings() -> None:
    fields = Settings.model_fields
    for variable in settings_env():
        name, _, nested = variable.removeprefix("EXECTRACK_").lower().partition("__")
        if name == "secrets_dir":
            continue  # read by Settings' model_config, not a field
        assert name in fields, variable
        if nested:
            annotation = fields[name].annotation
            assert annotation is not None
            assert nested in annotation.model_fields, variable


def test_consumer_deployment() -> None:
    deployment = named(base_resources(), "Deployment", "exectrack-consumer")
    assert 1 <= deployment["spec"]["replicas"] <= PARTITIONS
    # a surge pod past the partition count would never be ready (/readyz)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    spec = pod_spec(deployment)
    assert spec is not None
    assert spec["terminationGracePeriodSeconds"] >= SHUTDOWN_TIMEOUT_S + 10
    assert int(settings_env()["EXECTRACK_SHUTDOWN_TIMEOUT_S"]) == SHUTDOWN_TIMEOUT_S
    (container,) = spec["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    assert port == int(settings_env()["EXECTRACK_HEALTH_PORT"])
    assert settings_env()["EXECTRACK_HEALTH_HOST"] == "0.0.0.0"  # noqa: S104 (pods must)
    resources = container["resources"]
    assert resources["requests"]["memory"] == "256Mi"
    assert resources["limits"]["memory"] == "512Mi"
    assert resources["requests"]["cpu"] == "1000m"


@pytest.mark.parametrize(
    "name",
    [
        "exectrack-consumer",
        "exectrack-read",
        "exectrack-migrate",
        "exectrack-purge",
        "exectrack-reap",
    ],
)
def test_pods_are_locked_down_and_mount_settings(name: str) -> None:
    (resource,) = [r for r in base_resources() if r["metadata"]["name"] == name and pod_spec(r)]
    spec = pod_spec(resource)
    assert spec is not None
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = settings_env()
    assert mounts["secrets"] == env["EXECTRACK_SECRETS_DIR"]
    assert Path(env["EXECTRACK_RETENTION_FILE"]).parent == Path(mounts["retention"])
    assert mounts["tmp"] == "/tmp"  # noqa: S108 (an emptyDir, the only writable path)
    assert "limits" in container["resources"]


def test_retention_policy_in_the_config_map_is_valid() -> None:
    settings = Settings(retention_file=KUBE_BASE / "retention.toml")
    assert settings.retention.describe()


def test_jobs() -> None:
    resources = base_resources()
    (job,) = by_kind(resources, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    cronjobs = {c["metadata"]["name"]: c for c in by_kind(resources, "CronJob")}
    assert set(cronjobs) == {"exectrack-purge", "exectrack-reap"}
    for cronjob in cronjobs.values():
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (pdb,) = by_kind(resources, "PodDisruptionBudget")
    deployment = named(resources, "Deployment", "exectrack-consumer")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


@needs_kustomize
def test_migrations_first_selector(rendered: list[dict[str, Any]]) -> None:
    """docs/operations.md applies
    `-l 'app.kubernetes.io/component notin (consumer,read,purge,reap)'` first: it must
    pick the Job and everything the Job needs, and no Deployment or CronJob."""
    excluded = {"consumer", "read", "purge", "reap"}
    first = [
        r
        for r in rendered
        if r["metadata"].get("labels", {}).get("app.kubernetes.io/component") not in excluded
    ]
    picked = {(r["kind"], r["metadata"]["name"]) for r in first}
    (job,) = by_kind(first, "Job")
    spec = pod_spec(job)
    assert spec is not None
    assert ("ServiceAccount", spec["serviceAccountName"]) in picked
    assert ("Namespace", "exectrack") in picked
    for volume in spec["volumes"]:
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in picked
        if "secret" in volume:
            assert ("Secret", volume["secret"]["secretName"]) in picked
    for source in spec["containers"][0]["envFrom"]:
        assert ("ConfigMap", source["configMapRef"]["name"]) in picked
    assert not by_kind(first, "Deployment")
    assert not by_kind(first, "CronJob")


def test_read_deployment_and_service() -> None:
    """`serve` behind a Service: stateless replicas, readiness on the database, tokens needed."""
    resources = base_resources()
    deployment = named(resources, "Deployment", "exectrack-read")
    assert deployment["spec"]["replicas"] >= 2  # stateless: any replica answers any request
    spec = pod_spec(deployment)
    assert spec is not None
    (container,) = spec["containers"]
    assert container["args"] == ["serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    env = settings_env()
    assert port == int(env["EXECTRACK_READ__PORT"])
    assert env["EXECTRACK_READ__HOST"] == "0.0.0.0"  # noqa: S104 (pods must; tokens then)
    service = named(resources, "Service", "exectrack-read")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    consumer = named(resources, "Deployment", "exectrack-consumer")
    assert consumer["spec"]["selector"] != deployment["spec"]["selector"]
