"""compose.yaml and deploy/k8s pass the validators of `make compose-check` (deploy/check.py), a broken
copy of each does not, and every CDS_* name they set is a setting the service knows."""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Callable
from typing import Any

import pytest

from cds_service.config import SERVE_VARIABLES, Settings, _Recording
from deploy import check


def test_the_manifests_pass_the_standard_validators():
    ran, problems = check.run()
    assert problems == []
    assert any("compose-spec JSON schema" in line for line in ran)
    assert any("kubernetes-validate" in line for line in ran)


def _compose() -> dict[str, Any]:
    return check.load_yaml(check.COMPOSE)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        for key in parents:
            doc = doc[key]
        doc[last] = value
    return mutate


@pytest.mark.parametrize(("mutate", "says"), [
    (_set("services/cds/helthcheck", {"test": ["CMD", "true"]}), "'helthcheck' does not match"),
    (_set("services/cds/depends_on/migrate/condition", "service_finished"), "depends_on"),
    (_set("services/cds/healthcheck/interval", 10), "is not of type"),
    (_set("services/nginx/depends_on", {"cdx": {"condition": "service_healthy"}}), "unknown service cdx"),
    (_set("services/db/secrets", ["db_pasword"]), "undefined secret db_pasword"),
    (_set("services/db/volumes", ["pg-data:/var/lib/postgresql/data"]), "undefined volume pg-data"),
    (_set("services/nginx/volumes", ["./deploy/ngnix:/etc/nginx/templates:ro"]), "missing path"),
], ids=["unknown-key", "bad-condition", "bad-type", "unknown-dependency", "undefined-secret",
        "undefined-volume", "missing-mount"])
def test_a_broken_compose_file_is_refused(mutate, says):
    doc = _compose()
    assert check.compose_problems(doc) == []
    mutate(doc)
    problems = check.compose_problems(doc)
    assert any(says in p for p in problems), problems


def _k8s() -> list[tuple[Any, dict[str, Any]]]:
    return list(check.k8s_documents(check.k8s_paths()))


def _of(docs: list[tuple[Any, dict[str, Any]]], kind: str) -> dict[str, Any]:
    return next(d for _, d in docs if d["kind"] == kind)


def _container(docs: list[tuple[Any, dict[str, Any]]]) -> dict[str, Any]:
    return _of(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


K8S_BREAKS: dict[str, tuple[Callable[[list[tuple[Any, dict[str, Any]]]], None], str]] = {
    "unknown-field": (lambda d: _container(d)["readinessProbe"]["httpGet"].update(prot=8080),
                      "'prot' was unexpected"),
    "bad-type": (lambda d: _of(d, "Deployment")["spec"].update(replicas="two"), "replicas"),
    "hpa-target": (lambda d: _of(d, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(name="cdx"),
                   "not defined"),
    "service-selector": (lambda d: _of(d, "Service")["spec"]["selector"].update(
        {"app.kubernetes.io/component": "web"}), "matches no Deployment"),
    "secret-key": (lambda d: _container(d)["env"][0]["valueFrom"]["secretKeyRef"].update(key="DATABASE_URL"),
                   "has no key DATABASE_URL"),
    "configmap": (lambda d: _container(d)["envFrom"][0]["configMapRef"].update(name="cds-setings"),
                  "ConfigMap cds-setings is not defined"),
    "probe-port": (lambda d: _container(d)["livenessProbe"]["httpGet"].update(port="web"), "does not name"),
    "removed-kind": (lambda d: _of(d, "HorizontalPodAutoscaler").update(apiVersion="autoscaling/v2beta1"),
                     "no schema"),
}


@pytest.mark.parametrize("name", sorted(K8S_BREAKS))
def test_a_broken_kubernetes_manifest_is_refused(name):
    docs = _k8s()
    assert check.k8s_problems(docs) == []
    mutate, says = K8S_BREAKS[name]
    broken = copy.deepcopy(docs)
    mutate(broken)
    problems = check.k8s_problems(broken)
    assert any(says in p for p in problems), problems


def test_kustomization_lists_every_manifest(tmp_path):
    assert check.kustomization_problems() == []
    k8s = tmp_path / "k8s"
    k8s.mkdir()
    for path in check.k8s_paths():
        (k8s / path.name).write_text(path.read_text())
    kustomization = tmp_path / "kustomization.yaml"
    kustomization.write_text(check.KUSTOMIZATION.read_text())
    (k8s / "ingress.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    (k8s / "pdb.yaml").unlink()
    assert sorted(check.kustomization_problems(kustomization, k8s)) == [
        "kustomization.yaml does not list k8s/ingress.yaml",
        "kustomization.yaml generates from site.yaml, which does not exist",
        "kustomization.yaml lists k8s/pdb.yaml, which does not exist",
    ]


def test_the_site_file_is_a_generated_configmap_the_pods_mount():
    docs = _k8s()
    assert check.k8s_problems(docs) == []
    mounted = {v["configMap"]["name"] for v in _of(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
               if "configMap" in v}
    assert mounted == {"cds-site"}
    broken = copy.deepcopy(docs)
    for volume in _of(broken, "Deployment")["spec"]["template"]["spec"]["volumes"]:
        if "configMap" in volume:
            volume["configMap"]["name"] = "cds-sites"
    assert any("ConfigMap cds-sites is not defined" in p for p in check.k8s_problems(broken))


def _known_settings() -> set[str]:
    recording = _Recording({})
    Settings._read(recording)
    return recording.read | SERVE_VARIABLES


def test_every_cds_name_in_the_deployment_files_is_a_setting():
    """A misspelt setting in a manifest would stop every replica at start (or, commented, mislead)."""
    named = check.settings_named(check.deploy_files())
    unknown = {name: sorted(files) for name, files in named.items() if name not in _known_settings()}
    assert unknown == {}
    # The regex finds what the files set: the settings a replicated deployment cannot do without.
    for name in ("CDS_DATABASE_URL", "CDS_STATE_SECRET", "CDS_TRUSTED_CLIENTS", "CDS_TRUST_PROXY_HEADERS"):
        assert name in named


def test_the_settings_scan_catches_a_typo(tmp_path):
    typo = tmp_path / "compose.yaml"
    typo.write_text(check.COMPOSE.read_text().replace("CDS_TRUSTED_CLIENTS:", "CDS_TRUSTED_CLIENT:"))
    assert "CDS_TRUSTED_CLIENT" in set(check.settings_named([typo])) - _known_settings()


def _k8s_environment() -> dict[str, str]:
    """The environment a pod of the Deployment gets (ConfigMap + Secret example values)."""
    docs = [d for _, d in _k8s()]
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    secret = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    env = dict(configmap)
    for item in _container([(None, d) for d in docs])["env"]:
        env[item["name"]] = secret[item["valueFrom"]["secretKeyRef"]["key"]]
    return env


def test_the_kubernetes_settings_are_accepted_in_production_mode(tmp_path):
    env = _k8s_environment()
    assert env["CDS_ENV"] == "production"
    settings = Settings.from_env({k: v for k, v in env.items() if k not in SERVE_VARIABLES})
    assert settings.trust_proxy_headers == 1 and settings.public_base_url == "https://cds.example.org"
    assert settings.production_problems() == []


def _compose_environment() -> dict[str, str]:
    """The cds service's environment with compose's ${VAR:-default} taken at its default."""
    env = {k: str(v) for k, v in _compose()["services"]["cds"]["environment"].items()}
    return {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in env.items()}


def test_the_compose_settings_are_accepted_in_production_mode():
    env = _compose_environment()
    script = _compose()["services"]["cds"]["entrypoint"][2]
    for name in re.findall(r"export (CDS_[A-Z_]+)=", script):
        env[name] = "postgresql+psycopg://cds:pw@db:5432/cds" if name == "CDS_DATABASE_URL" else "x" * 64
    settings = Settings.from_env({k: v for k, v in env.items() if k not in SERVE_VARIABLES})
    assert settings.trust_proxy_headers == 1 and settings.public_base_url is None
    assert settings.production_problems() == []


def test_the_deployed_site_file_is_accepted_by_check(monkeypatch, tmp_path, capsys):
    """deploy/site.yaml (mounted by compose, the cds-site ConfigMap in Kubernetes) passes the site check."""
    from cds_service import cli

    site = check.REPO / "deploy" / "site.yaml"
    for name in [k for k in os.environ if k.startswith("CDS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CDS_FEEDBACK_DB", str(tmp_path / "fb.sqlite3"))
    monkeypatch.setenv("CDS_SITE_CONFIG", str(site))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # `check` configures logging as a start would
    try:
        assert cli.main(["check"]) == 0
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert f"site configuration {site}: Example Hospital, version 1" in capsys.readouterr().out
