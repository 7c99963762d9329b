"""Validate compose.yaml and the Kubernetes manifests of deploy/k8s (`make compose-check`).

Standard validators, each named in the output:
  - compose.yaml: the official Compose Specification JSON schema (compose-spec/compose-spec,
    Apache-2.0), as shipped in the npm package dclint 3.1.0 (MIT), fetched with `npm pack` into
    the venv on first use; plus `docker compose config` when a docker CLI with the compose plugin
    exists (it needs no daemon for `config`).
  - Kubernetes: kubernetes-validate (PyPI), the Kubernetes JSON schemas of one API version in their
    strict form (unknown fields are errors), offline; plus `kubeconform -strict` and
    `kubectl kustomize` when they are on the PATH.
On top of the schemas, the references a schema cannot see: depends_on, secrets and volumes named in
compose.yaml exist; the Deployment, Service, HPA and PodDisruptionBudget select the same pods; every
ConfigMap/Secret a pod reads is defined (or generated, or marked optional); deploy/kustomization.yaml
lists every manifest and its generator files exist.

    python -m deploy.check            # exit 1 and one line per problem when something is wrong
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "compose.yaml"
K8S_DIR = REPO / "deploy" / "k8s"
KUSTOMIZATION = REPO / "deploy" / "kustomization.yaml"  # its root is deploy/: it reads deploy/site.yaml
K8S_VERSION = "1.30.0"  # the oldest Kubernetes still in mainstream support at the time of writing
DCLINT = ("dclint", "3.1.0")
SCHEMA_MEMBER = "package/schemas/compose.schema.json"


# --- compose ------------------------------------------------------------------------------------------

def compose_schema_path() -> Path:
    """The compose-spec schema, fetched once from the npm registry (npm pack: no install, no scripts)."""
    name, version = DCLINT
    target = Path(sys.prefix) / "share" / f"{name}-{version}" / "compose.schema.json"
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed once to fetch the compose-spec schema (npm pack dclint)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        out = subprocess.run([npm, "pack", f"{name}@{version}", "--silent", "--pack-destination", scratch],
                             capture_output=True, text=True, timeout=300, check=False)
        tarballs = list(Path(scratch).glob("*.tgz"))
        if out.returncode or not tarballs:
            raise RuntimeError(f"npm pack {name}@{version} failed: {out.stderr.strip()[-300:]}")
        with tarfile.open(tarballs[0]) as tar:
            member = tar.extractfile(SCHEMA_MEMBER)
            if member is None:
                raise RuntimeError(f"{name}@{version} has no {SCHEMA_MEMBER}")
            data = member.read()
    json.loads(data)  # a truncated download must not be kept
    target.write_bytes(data)
    return target


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose_problems(doc: Any, base: Path = REPO) -> list[str]:
    """Schema errors and dangling references of one compose document (already parsed)."""
    schema = json.loads(compose_schema_path().read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    problems = [
        f"compose: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if problems or not isinstance(doc, Mapping):
        return problems or ["compose: not a mapping"]
    services: Mapping[str, Any] = doc.get("services") or {}
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for dep in depends if isinstance(depends, (list, Mapping)) else ():
            if dep not in services:
                problems.append(f"compose: service {name} depends on unknown service {dep}")
        for secret in service.get("secrets") or ():
            key = secret if isinstance(secret, str) else secret.get("source")
            if key not in (doc.get("secrets") or {}):
                problems.append(f"compose: service {name} uses undefined secret {key}")
        for volume in service.get("volumes") or ():
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                if source.startswith(".") and not (base / source).exists():
                    problems.append(f"compose: service {name} mounts missing path {source}")
            elif source and source not in (doc.get("volumes") or {}):
                problems.append(f"compose: service {name} uses undefined volume {source}")
    return problems


def docker_compose_problems(path: Path) -> list[str] | None:
    """`docker compose config --quiet` when the compose plugin exists; None when it does not."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
    if probe.returncode:
        return None
    out = subprocess.run([docker, "compose", "-f", str(path), "config", "--quiet"],
                         capture_output=True, text=True, timeout=120, check=False)
    return [f"docker compose config: {line}" for line in out.stderr.splitlines() if line.strip()] \
        if out.returncode else []


# --- Kubernetes ---------------------------------------------------------------------------------------

def k8s_documents(paths: Iterable[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                yield path, doc


def k8s_paths(directory: Path = K8S_DIR) -> list[Path]:
    return sorted(directory.glob("*.yaml"))


def generated(kustomization: Path = KUSTOMIZATION) -> list[dict[str, Any]]:
    """The ConfigMaps the kustomization generates (name and keys), as the manifests refer to them."""
    out = []
    for gen in load_yaml(kustomization).get("configMapGenerator") or ():
        keys = [f.split("=", 1)[0].rsplit("/", 1)[-1] for f in gen.get("files") or ()]
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]},
                    "data": dict.fromkeys(keys, "")})
    return out


def k8s_problems(docs: list[tuple[Path, dict[str, Any]]], version: str = K8S_VERSION,
                 kustomization: Path = KUSTOMIZATION) -> list[str]:
    import kubernetes_validate

    problems = []
    for path, doc in docs:
        where = f"{path.name}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{where}: no schema for it in Kubernetes {version} ({exc})")
    return problems + k8s_reference_problems([d for _, d in docs] + generated(kustomization))


def _named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind and d.get("metadata")}


def _pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind/name, pod template metadata, pod spec) of every workload."""
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc.get("kind") == "CronJob":
            spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        template = spec.get("template")
        if isinstance(template, Mapping):
            yield f"{doc['kind']}/{doc['metadata']['name']}", template.get("metadata") or {}, template["spec"]


def k8s_reference_problems(docs: list[dict[str, Any]]) -> list[str]:
    problems = []
    configmaps, secrets = _named(docs, "ConfigMap"), _named(docs, "Secret")
    deployments = _named(docs, "Deployment")
    for name, dep in deployments.items():
        wanted = dep["spec"]["selector"].get("matchLabels") or {}
        labels = dep["spec"]["template"]["metadata"].get("labels") or {}
        if any(labels.get(k) != v for k, v in wanted.items()):
            problems.append(f"Deployment/{name}: selector does not match its pod labels")
    pod_labels = [d["spec"]["template"]["metadata"].get("labels") or {} for d in deployments.values()]

    def selects_a_deployment(selector: Mapping[str, str]) -> bool:
        return any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels)

    for name, svc in _named(docs, "Service").items():
        if not selects_a_deployment(svc["spec"].get("selector") or {}):
            problems.append(f"Service/{name}: selector matches no Deployment's pods")
    for name, pdb in _named(docs, "PodDisruptionBudget").items():
        if not selects_a_deployment(pdb["spec"]["selector"].get("matchLabels") or {}):
            problems.append(f"PodDisruptionBudget/{name}: selector matches no Deployment's pods")
    for name, hpa in _named(docs, "HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        if target.get("kind") != "Deployment" or target.get("name") not in deployments:
            scaled = f"{target.get('kind')}/{target.get('name')}"
            problems.append(f"HorizontalPodAutoscaler/{name}: scales {scaled}, which is not defined")
    for where, _, pod in _pod_specs(docs):
        problems += _pod_reference_problems(where, pod, configmaps, secrets)
    return problems


def _pod_reference_problems(where: str, pod: Mapping[str, Any], configmaps: Mapping[str, Any],
                            secrets: Mapping[str, Any]) -> list[str]:
    problems = []

    def need(kind: str, ref: Mapping[str, Any], key: str | None = None) -> None:
        known = configmaps if kind == "ConfigMap" else secrets
        name = ref.get("name") if kind == "ConfigMap" or "name" in ref else ref.get("secretName")
        if ref.get("optional"):
            return
        if name not in known:
            problems.append(f"{where}: {kind} {name} is not defined")
        elif key is not None:
            data = {**(known[name].get("data") or {}), **(known[name].get("stringData") or {})}
            if key not in data:
                problems.append(f"{where}: {kind} {name} has no key {key}")

    volumes = {v["name"] for v in pod.get("volumes") or ()}
    for volume in pod.get("volumes") or ():
        if "configMap" in volume:
            need("ConfigMap", volume["configMap"])
        if "secret" in volume:
            for item in volume["secret"].get("items") or [{}]:
                need("Secret", volume["secret"], item.get("key"))
    for container in [*pod.get("initContainers", ()), *pod["containers"]]:
        for source in container.get("envFrom") or ():
            if "configMapRef" in source:
                need("ConfigMap", source["configMapRef"])
            if "secretRef" in source:
                need("Secret", source["secretRef"])
        for env in container.get("env") or ():
            ref = env.get("valueFrom") or {}
            if "secretKeyRef" in ref:
                need("Secret", ref["secretKeyRef"], ref["secretKeyRef"]["key"])
            if "configMapKeyRef" in ref:
                need("ConfigMap", ref["configMapKeyRef"], ref["configMapKeyRef"]["key"])
        for mount in container.get("volumeMounts") or ():
            if mount["name"] not in volumes:
                problems.append(f"{where}: {container['name']} mounts unknown volume {mount['name']}")
        ports = {p.get("name") for p in container.get("ports") or ()}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = ((container.get(probe) or {}).get("httpGet") or {}).get("port")
            if isinstance(port, str) and port not in ports:
                problems.append(f"{where}: {probe} uses port {port}, which the container does not name")
    return problems


def kustomization_problems(kustomization: Path = KUSTOMIZATION, directory: Path = K8S_DIR) -> list[str]:
    """Every manifest of `directory` is a resource, and every resource or generator file exists."""
    doc = load_yaml(kustomization)
    root = kustomization.parent
    listed = {(root / r).resolve() for r in doc.get("resources") or ()}
    present = {p.resolve() for p in k8s_paths(directory)}
    files = {(root / f.split("=", 1)[-1]).resolve()
             for gen in doc.get("configMapGenerator") or () for f in gen.get("files") or ()}
    name = kustomization.name
    return ([f"{name} lists {p.relative_to(root)}, which does not exist" for p in sorted(listed - present)]
            + [f"{name} does not list {p.relative_to(root)}" for p in sorted(present - listed)]
            + [f"{name} generates from {p.relative_to(root)}, which does not exist"
               for p in sorted(files) if not p.is_file()])


def tool_problems(argv: list[str], label: str) -> list[str] | None:
    """Run an optional validator found on the PATH; None when it is not there."""
    if shutil.which(argv[0]) is None:
        return None
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    text = (out.stdout + out.stderr).strip().splitlines()
    return [f"{label}: {line}" for line in text[-20:]] if out.returncode else []


# --- environment variables ----------------------------------------------------------------------------

CDS_NAME = re.compile(r"\bCDS_[A-Z0-9_]*[A-Z0-9]\b")


def deploy_files() -> list[Path]:
    deploy = REPO / "deploy"
    return [COMPOSE, *sorted(deploy.rglob("*.yaml")), *sorted(deploy.rglob("*.template"))]


COMMENT = re.compile(r"(^|\s)#.*$", re.MULTILINE)


def settings_named(paths: Iterable[Path]) -> dict[str, set[str]]:
    """Every CDS_* name the deployment files set or interpolate (comments left out), by file."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for name in CDS_NAME.findall(COMMENT.sub("", path.read_text(encoding="utf-8"))):
            shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
            found.setdefault(name, set()).add(str(shown))
    return found


# --- the command --------------------------------------------------------------------------------------

def run(compose: Path = COMPOSE, k8s_dir: Path = K8S_DIR,
        kustomization: Path = KUSTOMIZATION) -> tuple[list[str], list[str]]:
    """(validators that ran, problems found)."""
    ran, problems = [], []
    name, version = DCLINT
    problems += compose_problems(load_yaml(compose), compose.parent)
    ran.append(f"compose.yaml: compose-spec JSON schema (from npm {name}@{version}) + references")
    docker = docker_compose_problems(compose)
    if docker is not None:
        ran.append("compose.yaml: docker compose config")
        problems += docker
    docs = list(k8s_documents(k8s_paths(k8s_dir)))
    problems += k8s_problems(docs, kustomization=kustomization)
    problems += kustomization_problems(kustomization, k8s_dir)
    ran.append(f"deploy/k8s: kubernetes-validate, Kubernetes {K8S_VERSION} strict schemas + references")
    kubeconform = tool_problems(["kubeconform", "-strict", "-summary", *map(str, k8s_paths(k8s_dir))],
                                "kubeconform")
    if kubeconform is not None:
        ran.append("deploy/k8s: kubeconform -strict")
        problems += kubeconform
    kustomize = tool_problems(["kubectl", "kustomize", str(kustomization.parent)], "kubectl kustomize")
    if kustomize is not None:
        ran.append("deploy/k8s: kubectl kustomize (builds)")
        problems += kustomize
    return ran, problems


def main() -> int:
    try:
        ran, problems = run()
    except RuntimeError as exc:
        print(f"compose-check: {exc}", file=sys.stderr)
        return 2
    for line in ran:
        print(f"ran: {line}")
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"compose-check: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
