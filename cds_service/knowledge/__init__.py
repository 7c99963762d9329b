"""Loads the knowledge base under `cards/` and refuses invalid files.

Contract (relied on by the protocol layer): `load_knowledge(cards_dir) -> Knowledge`, raising
`KnowledgeError` naming the file and the path inside it; `Knowledge.version` (from `cards/VERSION`).
Every file is checked against its JSON schema in `cds_service/knowledge/schema/` (shipped with the
code that relies on it, so a site's own `cards/` cannot loosen it), every predicate against the closed
vocabulary in `predicates.py`, and every procedure or pitfall id against the catalog, so a bad edit
stops the service at start instead of misfiring on a patient.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cds_service import yaml_load
from cds_service.knowledge import predicates
from cds_service.knowledge.errors import KnowledgeError
from cds_service.knowledge.model import (
    Catalog,
    Code,
    Local,
    Outcome,
    Pitfall,
    Procedure,
    Rating,
    Requirement,
    Scenario,
    Texts,
    Tracer,
    Variant,
)

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

__all__ = ["DEFAULT_CARDS_DIR", "Knowledge", "KnowledgeError", "load_knowledge"]



def _builtin_cards_dir() -> Path:
    # A source checkout (or editable install) reads cards/ in place, so edits show without a
    # reinstall; an installed wheel carries the same files as package data (pyproject.toml).
    checkout = Path(__file__).resolve().parents[2] / "cards"
    if (checkout / "VERSION").is_file():
        return checkout
    return Path(__file__).resolve().parents[1] / "_cards"


DEFAULT_CARDS_DIR = _builtin_cards_dir()
# The JSON schemas guard the data, so they ship with the code, not beside the data they check.
SCHEMA_DIR = Path(__file__).resolve().parent / "schema"


@dataclass(frozen=True)
class Knowledge:
    version: str
    digest: str  # sha256 over the files read, to tell two deployments of one version apart
    catalog: Catalog
    scenarios: tuple[Scenario, ...]  # highest priority first
    pitfalls: Mapping[str, Pitfall]
    texts: Texts
    valuesets: Any = None  # cds_service.knowledge.valuesets.ValueSets
    # A site's changes (knowledge/site.py `site_view`); the loaded base carries none.
    local: Local = Local()

    def scenario(self, scenario_id: str) -> Scenario | None:
        return next((s for s in self.scenarios if s.id == scenario_id), None)

    @property
    def modality_of(self) -> dict[str, str]:
        return {p.id: p.modality for p in self.catalog.procedures.values()}


def load_knowledge(cards_dir: Path | None = None, cache_dir: Path | None = None) -> Knowledge:
    """Read, schema-check and cross-check every file under `cards_dir` (default: the built-in base).

    The result is kept in this process and, with `cache_dir`, on disk, under a hash of every file
    and of the loader's code (knowledge/cache.py): an unchanged base loads in milliseconds, a
    changed one is loaded and checked in full.
    """
    from cds_service.knowledge import cache

    root = Path(cards_dir) if cards_dir is not None else DEFAULT_CARDS_DIR
    if not root.is_dir():
        return _load(root)  # the full load names what is missing
    knowledge: Knowledge = cache.cached(root, cache_dir, lambda: _load(root), Knowledge)
    return knowledge


def _load(root: Path) -> Knowledge:
    reader = _Reader(root)
    version_file = root / "VERSION"
    if not version_file.is_file():
        raise KnowledgeError(f"{version_file}: missing knowledge version file")
    version = version_file.read_text(encoding="utf-8").strip()
    if not version:
        raise KnowledgeError(f"{version_file}: empty knowledge version")

    catalog = _catalog(reader.read("procedures.yaml", "procedures"))
    pitfalls = _pitfalls(reader.read("pitfalls.yaml", "pitfalls"), catalog)
    texts = _texts(reader.read("texts/general.yaml", "texts"))
    scenario_files = sorted((root / "scenarios").glob("*.yaml"))
    if not scenario_files:
        raise KnowledgeError(f"{root / 'scenarios'}: no scenario files")
    scenarios = [
        _scenario(reader.read(f"scenarios/{f.name}", "scenario"), f, catalog, pitfalls)
        for f in scenario_files
    ]
    scenarios.sort(key=lambda s: -s.priority)
    for s in scenarios:  # cards print each source article's citation: every id needs one
        for i, seed in enumerate(s.seeds):
            if seed not in texts.source_articles:
                raise _fail(
                    f"scenarios/{s.id}.yaml",
                    f"seeds/{i}",
                    f"no citation for {seed!r} in texts/general.yaml source_articles",
                )

    # Imported here: the value-set module belongs to the facts stage and may import this package.
    from cds_service.knowledge.valuesets import load_valuesets

    return Knowledge(
        version=version,
        digest=reader.digest(),
        catalog=catalog,
        scenarios=tuple(scenarios),
        pitfalls=pitfalls,
        texts=texts,
        valuesets=load_valuesets(root),
    )


class _Reader:
    """Reads YAML files and checks them against `SCHEMA_DIR/<name>.schema.json`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._hash = hashlib.sha256()
        self._validators: dict[str, Draft202012Validator] = {}

    def read(self, relative: str, schema: str) -> dict[str, Any]:
        path = self.root / relative
        try:
            raw = path.read_bytes()
            data = yaml_load.safe_load(raw)
        except OSError as exc:
            raise KnowledgeError(f"{path}: cannot read ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise KnowledgeError(f"{path}: invalid YAML: {exc}") from exc
        self._hash.update(relative.encode() + b"\0" + raw)
        data = _dates_as_text(data)
        errors = sorted(self._validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise KnowledgeError(f"{path}: {where}: {first.message}{more}")
        if not isinstance(data, dict):  # every schema's top level is an object
            raise KnowledgeError(f"{path}: (top level): not a mapping")
        return data

    def _validator(self, name: str) -> Draft202012Validator:
        # imported here: a start served from the knowledge cache never needs jsonschema (~0.15 s)
        from jsonschema import Draft202012Validator

        if name not in self._validators:
            schema_path = SCHEMA_DIR / f"{name}.schema.json"
            try:
                schema = json.loads(schema_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise KnowledgeError(f"{schema_path}: cannot load schema: {exc}") from exc
            self._validators[name] = Draft202012Validator(schema)
        return self._validators[name]

    def digest(self) -> str:
        return self._hash.hexdigest()[:12]


def _dates_as_text(data: Any) -> Any:
    """YAML reads `reviewed: 2026-11-30` as a date; the schemas and the model keep ISO text."""
    if isinstance(data, dict):
        return {k: _dates_as_text(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_dates_as_text(v) for v in data]
    return data.isoformat() if isinstance(data, date) else data


def _fail(file: str | Path, path: str, message: str) -> KnowledgeError:
    return KnowledgeError(f"{file}: {path}: {message}")


def _catalog(data: dict[str, Any]) -> Catalog:
    file = "procedures.yaml"
    aliases = dict(data.get("system_aliases") or {})
    procedures: dict[str, Procedure] = {}
    by_code: dict[tuple[str, str], str] = {}
    for i, p in enumerate(data["procedures"]):
        if p["id"] in procedures:
            raise _fail(file, f"procedures[{i}].id", f"duplicate procedure id {p['id']!r}")
        codes = tuple(Code(c["system"], str(c["code"]), c["verified"], c["source"]) for c in p["codes"])
        for code in codes:
            key = (aliases.get(code.system, code.system), code.code)
            if key in by_code:
                raise _fail(file, f"procedures[{i}].codes", f"{key} already maps to {by_code[key]!r}")
            by_code[key] = p["id"]
        procedures[p["id"]] = Procedure(
            id=p["id"],
            display=p["display"],
            modality=p["modality"],
            contrast=p["contrast"],
            region=p["region"],
            rrl=p["relative_radiation_level"],
            rrl_verified=p["rrl_verified"],
            codes=codes,
            components=tuple(p.get("components", ())),
            pet_tracer=p.get("pet_tracer", False),
            component_only=p.get("component_only", False),
            component_sets=tuple(tuple(s) for s in p.get("component_sets", ())),
            part_of=tuple(p.get("part_of", ())),
            family=p.get("family"),
        )
    for i, p in enumerate(data["procedures"]):
        refs: list[tuple[str, str]] = [("components", c) for c in p.get("components", ())]
        refs += [("component_sets", c) for s in p.get("component_sets", ()) for c in s]
        refs += [("part_of", c) for c in p.get("part_of", ())]
        for field_name, ref_id in refs:
            if ref_id not in procedures or ref_id == p["id"]:
                raise _fail(file, f"procedures[{i}].{field_name}", f"unknown procedure id {ref_id!r}")
    tracers: dict[tuple[str, str], Tracer] = {}
    for i, t in enumerate(data["pet_tracers"]):
        if t["procedure"] not in procedures or not procedures[t["procedure"]].pet_tracer:
            raise _fail(
                file, f"pet_tracers[{i}].procedure", f"{t['procedure']!r} is not a tracer-specific PET study"
            )
        key = (aliases.get(t["system"], t["system"]), str(t["code"]))
        tracers[key] = Tracer(key[0], key[1], t["procedure"], t["agent"], t["verified"], t["source"])
    return Catalog(
        procedures=procedures,
        by_code=by_code,
        tracers=tracers,
        system_aliases=aliases,
        containers=_containers(file, procedures),
    )


def _containers(file: str, procedures: Mapping[str, Procedure]) -> dict[str, frozenset[str]]:
    """procedure id -> every study containing it: a component is part of its combination, `part_of`
    says so directly, and containment is transitive (CT abdomen < CT abdomen/pelvis < CT C/A/P)."""
    direct: dict[str, set[str]] = {pid: set(p.part_of) for pid, p in procedures.items()}
    for p in procedures.values():
        for parts in p.join_sets:
            for part in parts:
                direct[part].add(p.id)
    closed: dict[str, frozenset[str]] = {}
    for pid in procedures:
        seen: set[str] = set()
        todo = list(direct[pid])
        while todo:
            whole = todo.pop()
            if whole == pid:
                raise _fail(file, "procedures", f"{pid!r} contains itself through components/part_of")
            if whole not in seen:
                seen.add(whole)
                todo += direct[whole]
        closed[pid] = frozenset(seen)
    return closed


def _check_predicate(file: str | Path, pred: Any, path: str) -> Any:
    problems = predicates.check(pred, path)
    if problems:
        raise KnowledgeError(
            f"{file}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if problems[1:] else "")
        )
    return pred


def _check_ids(file: str | Path, ids: Any, catalog: Catalog, path: str) -> tuple[str, ...]:
    for i, pid in enumerate(ids):
        if pid not in catalog.procedures:
            raise _fail(file, f"{path}[{i}]", f"unknown procedure id {pid!r}")
    return tuple(ids)


def _pitfalls(data: dict[str, Any], catalog: Catalog) -> dict[str, Pitfall]:
    file = "pitfalls.yaml"
    out: dict[str, Pitfall] = {}
    for i, p in enumerate(data["pitfalls"]):
        here = f"pitfalls[{i}]"
        if p["id"] in out:
            raise _fail(file, f"{here}.id", f"duplicate pitfall id {p['id']!r}")
        applies = p["applies_to"]
        procs = _check_ids(file, applies.get("procedures", ()), catalog, f"{here}.applies_to.procedures")
        prefer = p.get("prefer", [])
        prefer_ids = _check_ids(file, prefer, catalog, f"{here}.prefer") if isinstance(prefer, list) else ()
        out[p["id"]] = Pitfall(
            id=p["id"],
            title=p["title"],
            short=p["short"],
            indicator=p["indicator"],
            applies_procedures=frozenset(procs),
            applies_contrast=frozenset(applies.get("contrast", ())),
            trigger=_check_predicate(file, p["trigger"], f"{here}.trigger"),
            text=p["text"],
            sources=tuple(p["sources"]),
            prefer=prefer_ids,
            prefer_contrast_not=prefer.get("contrast_not") if isinstance(prefer, dict) else None,
            source_kind=p["source_kind"],
            guideline=p.get("guideline"),
            reviewed=p["reviewed"],
        )
    return out


def _texts(data: dict[str, Any]) -> Texts:
    outcomes = {
        o["id"]: Outcome(o["id"], o["title"], o["description"], tuple(o["sources"])) for o in data["outcomes"]
    }
    return Texts(
        canonical_base=data["canonical_base"],
        source_label=data["source_label"],
        category_labels=dict(data["category_labels"]),
        override_reasons=tuple((r["code"], r["display"]) for r in data["override_reasons"]),
        outcomes=outcomes,
        source_articles=dict(data["source_articles"]),
    )


def _scenario(
    data: dict[str, Any], path: Path, catalog: Catalog, pitfalls: Mapping[str, Pitfall]
) -> Scenario:
    file = f"scenarios/{path.name}"
    if data["id"] != path.stem:
        raise _fail(file, "id", f"id {data['id']!r} must equal the file name {path.stem!r}")
    variants = []
    for i, v in enumerate(data["variants"]):
        here = f"variants[{i}]"
        ratings = {}
        for pid, r in v["ratings"].items():
            if pid not in catalog.procedures or catalog.procedures[pid].component_only:
                raise _fail(file, f"{here}.ratings.{pid}", f"unknown or unratable procedure id {pid!r}")
            if r.get("applies_to_parts") and r["category"] != "usually-not-appropriate":
                # a part misses what made the whole study appropriate: only a "not" carries over
                raise _fail(file, f"{here}.ratings.{pid}", "applies_to_parts needs usually-not-appropriate")
            acr = r.get("acr") or data["acr"]
            if r["source_kind"] == "acr" and not acr:
                raise _fail(
                    file, f"{here}.ratings.{pid}.acr", "an ACR rating needs the ACR topic and variant"
                )
            ratings[pid] = Rating(
                pid,
                r["category"],
                r["rationale"],
                r["source"],
                source_kind=r["source_kind"],
                guideline=r.get("guideline"),
                acr=acr if r["source_kind"] == "acr" else None,
                applies_to_parts=r.get("applies_to_parts"),
            )
        when = _check_predicate(file, v["when"], f"{here}.when") if "when" in v else None
        preferred = _check_ids(file, v["preferred"], catalog, f"{here}.preferred")
        variants.append(Variant(v["id"], v["title"], when, ratings, preferred))
    for i, pid in enumerate(data["pitfalls"]):
        if pid not in pitfalls:
            raise _fail(file, f"pitfalls[{i}]", f"unknown pitfall id {pid!r}")
    recommended = data.get("recommended", {})
    _check_ids(file, list(recommended), catalog, "recommended")
    urgent = data.get("urgent_procedure")
    if urgent is not None:
        _check_ids(file, [urgent], catalog, "urgent_procedure")
    requires = tuple(
        Requirement(r["id"], r["label"], _check_predicate(file, r["when"], f"requires[{i}].when"))
        for i, r in enumerate(data["requires"])
    )
    return Scenario(
        id=data["id"],
        title=data["title"],
        label=data["label"],
        kind=data["kind"],
        priority=data["priority"],
        description=data["description"],
        acr=data["acr"],
        seeds=tuple(data["seeds"]),
        population=_check_predicate(file, data["population"], "population"),
        requires=requires,
        criteria=_check_predicate(file, data["criteria"], "criteria"),
        variants=tuple(variants),
        pitfalls=tuple(data["pitfalls"]),
        recommended=dict(recommended),
        urgent_procedure=urgent,
        evidence=data.get("evidence"),
        reviewed=data["reviewed"],
    )
