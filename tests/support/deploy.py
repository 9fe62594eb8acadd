"""Reading deploy/ for its tests: YAML documents, the rendered Kubernetes overlay,
and the exectrack commands every manifest runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUBE_BASE = DEPLOY / "kubernetes" / "base"
KUBE_OVERLAY = DEPLOY / "kubernetes" / "overlays" / "example"
SYSTEMD = DEPLOY / "systemd"
CLIS = ("exectrack-consumer", "exectrack-producer")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def base_resources() -> list[dict[str, Any]]:
    """The base's own manifests, as written (before kustomize)."""
    kustomization = load_yaml(KUBE_BASE / "kustomization.yaml")
    return [doc for name in kustomization["resources"] for doc in load_all(KUBE_BASE / name)]


def kustomize_command() -> list[str] | None:
    """``kustomize build`` (PATH or GOPATH/bin), else ``kubectl kustomize``; None if neither."""
    found = shutil.which("kustomize")
    if found is None:
        gopath = os.environ.get("GOPATH") or str(Path.home() / "go")
        candidate = Path(gopath) / "bin" / "kustomize"
        found = str(candidate) if candidate.is_file() else None
    if found is not None:
        return [found, "build"]
    kubectl = shutil.which("kubectl")
    return [kubectl, "kustomize"] if kubectl else None


def render(directory: Path, command: list[str]) -> list[dict[str, Any]]:
    out = subprocess.run(
        [*command, str(directory)], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def pod_spec(resource: dict[str, Any]) -> dict[str, Any] | None:
    kind = resource.get("kind")
    if kind in ("Deployment", "Job"):
        spec: dict[str, Any] = resource["spec"]["template"]["spec"]
        return spec
    if kind == "CronJob":
        spec = resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    return None


def kubernetes_commands(resources: list[dict[str, Any]]) -> Iterator[tuple[str, list[str]]]:
    """(cli, argv) of each container; the image's ENTRYPOINT is exectrack-consumer."""
    for resource in resources:
        spec = pod_spec(resource)
        for container in (spec or {}).get("containers", []):
            command = container.get("command") or ["exectrack-consumer"]
            yield command[0], [*command[1:], *container.get("args", [])]


def compose_commands() -> Iterator[tuple[str, list[str]]]:
    for service in load_yaml(COMPOSE)["services"].values():
        if not str(service.get("image", "")).startswith("exectrack"):
            continue  # kafka, mysql
        entrypoint = service.get("entrypoint") or ["exectrack-consumer"]
        yield entrypoint[0], [*entrypoint[1:], *service.get("command", [])]


def systemd_commands() -> Iterator[tuple[str, list[str]]]:
    for unit in sorted(SYSTEMD.glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                program, *args = line.removeprefix("ExecStart=").split()
                yield Path(program).name, args
