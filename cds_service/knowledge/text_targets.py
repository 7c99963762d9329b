"""Target phrases for reading report and problem text: cards/text/targets.yaml.

Loaded, schema-checked and cross-checked against the closed vocabulary at start, like every other
knowledge file, so a typo in a target stops the service instead of silently never matching. The
NLP pipeline itself (cds_service.facts.text) is built from these values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cds_service import yaml_load
from cds_service.knowledge.errors import KnowledgeError
from cds_service.knowledge.vocabulary import CONCEPTS, FINDINGS, MODALITIES

TARGETS_FILE = "text/targets.yaml"
SCHEMA_FILE = Path(__file__).resolve().parent / "schema" / "text-targets.schema.json"


@dataclass(frozen=True)
class TextTarget:
    id: str
    concepts: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    negated_findings: tuple[str, ...] = ()  # findings a negated, certain mention stands for
    modality: str | None = None
    historical: tuple[str, ...] = ()  # concepts a historical mention stands for ("history of ...")
    phrases: tuple[str, ...] = ()
    patterns: tuple[tuple[Mapping[str, Any], ...], ...] = ()
    source: str = ""


@dataclass(frozen=True)
class ContextChange:
    """One change to medspaCy's default ConText rules (replace, remove or add a trigger)."""

    literal: str
    category: str | None = None
    direction: str | None = None
    pattern: tuple[Mapping[str, Any], ...] | None = None
    replaces: str | None = None
    remove: bool = False


@dataclass(frozen=True)
class TextTargets:
    targets: tuple[TextTarget, ...] = ()
    context: tuple[ContextChange, ...] = ()
    skip_sections: tuple[str, ...] = ()
    read_sections: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)
    digest: str = ""  # identifies the pipeline built from these targets (cache key part)

    def by_id(self, target_id: str) -> TextTarget | None:
        return next((t for t in self.targets if t.id == target_id), None)


def _fail(path: str, message: str) -> KnowledgeError:
    return KnowledgeError(f"{TARGETS_FILE}: {path}: {message}")


def load_text_targets(cards_dir: Path) -> TextTargets:
    """Read and check cards/text/targets.yaml; KnowledgeError names the file and the place."""
    path = Path(cards_dir) / TARGETS_FILE
    schema_path = SCHEMA_FILE
    try:
        raw = path.read_text(encoding="utf-8")
        data = yaml_load.safe_load(raw)
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KnowledgeError(f"{exc.filename}: cannot read ({exc.strerror})") from exc
    except (yaml.YAMLError, ValueError) as exc:
        raise KnowledgeError(f"{TARGETS_FILE}: cannot parse: {exc}") from exc
    import jsonschema  # here: a start served from the knowledge cache never needs it

    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path)
    )
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
        raise _fail(where, errors[0].message)
    targets: list[TextTarget] = []
    seen: set[str] = set()
    for i, t in enumerate(data["targets"]):
        here = f"targets/{i}"
        if t["id"] in seen:
            raise _fail(f"{here}/id", f"duplicate target id {t['id']!r}")
        seen.add(t["id"])
        if t["source"] not in data["sources"]:
            raise _fail(f"{here}/source", f"{t['source']!r} is not listed in sources")
        for key, allowed in (
            ("concepts", CONCEPTS),
            ("historical", CONCEPTS),
            ("findings", FINDINGS),
            ("negated_findings", FINDINGS),
        ):
            for value in t.get(key, ()):
                if value not in allowed:
                    raise _fail(f"{here}/{key}", f"unknown id {value!r} (not in the vocabulary)")
        if t.get("modality") is not None and t["modality"] not in MODALITIES:
            raise _fail(f"{here}/modality", f"unknown modality {t['modality']!r}")
        if not (t.get("concepts") or t.get("findings") or t.get("negated_findings") or t.get("modality")):
            raise _fail(here, "a target must name concepts, findings, negated findings or a modality")
        targets.append(
            TextTarget(
                id=t["id"],
                concepts=tuple(t.get("concepts", ())),
                findings=tuple(t.get("findings", ())),
                negated_findings=tuple(t.get("negated_findings", ())),
                modality=t.get("modality"),
                historical=tuple(t.get("historical", ())),
                phrases=tuple(t.get("phrases", ())),
                patterns=tuple(tuple(p) for p in t.get("patterns", ())),
                source=t["source"],
            )
        )
    changes = tuple(
        ContextChange(
            literal=c["literal"],
            category=c.get("category"),
            direction=c.get("direction"),
            pattern=tuple(c["pattern"]) if "pattern" in c else None,
            replaces=c.get("replaces"),
            remove=c.get("remove", False),
        )
        for c in data["context_rules"]
    )
    for i, c in enumerate(changes):
        if not c.remove and (c.category is None or c.direction is None):
            raise _fail(f"context_rules/{i}", "a rule that is not removed needs category and direction")
    return TextTargets(
        targets=tuple(targets),
        context=changes,
        skip_sections=tuple(data["sections"]["skip"]),
        read_sections=tuple(data["sections"]["read"]),
        sources=dict(data["sources"]),
        digest=hashlib.sha256(raw.encode()).hexdigest()[:16],
    )
