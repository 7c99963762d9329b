"""Value sets under cards/valuesets/ and the medication catalog cards/medications.yaml.

`load_valuesets(cards_dir)` schema-checks every file and compiles the lookup indexes once, at
start: (system, code) -> value-set ids, ICD-10-CM prefixes -> value-set ids, and medication codes ->
ingredients. The facts stage then selects resources by code on the raw JSON with dict lookups, so a
request costs a few hash probes per coding whatever the size of the knowledge base.

Matching rules (clinical safety): codes match on (system, code) only, never on display text.
ICD-10-CM is the one hierarchy matched by prefix, and only through explicit `prefix` entries.
A few system URIs are accepted as synonyms of the canonical ones (see SYSTEM_SYNONYMS).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cds_service import yaml_load
from cds_service.knowledge import KnowledgeError
from cds_service.knowledge.text_targets import load_text_targets

if TYPE_CHECKING:
    import jsonschema

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "urn:oid:2.16.840.1.113883.6.285"
DCM = "http://dicom.nema.org/resources/ontology/DCM"

# EHRs send the same code systems under other URIs. `icd-10` (the WHO URI) is accepted for
# ICD-10-CM because US EHRs often label ICD-10-CM codes with it and the shared 3-character
# categories (C50, C61, C77-C79) mean the same thing in both; the OIDs are the HL7 v3 identifiers
# of the same systems, still emitted by some CDA-to-FHIR converters.
SYSTEM_SYNONYMS: Mapping[str, str] = {
    "http://hl7.org/fhir/sid/icd-10": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "http://snomed.info/sct/": SNOMED,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": HCPCS,
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": HCPCS,
}

# Longest code and system URI matched at all. Real codes are short (ICD-10-CM at most 8
# characters without the dot, SNOMED ids at most 18 digits, LOINC/RxNorm/CPT under 12); system
# URIs are URLs or OIDs. Anything longer is garbage that cannot match a value set: it is skipped
# before any string work, so its length never shows up in the time a request takes.
MAX_CODE_CHARS = 64
_MEMO_SIZE = 20_000  # distinct (system, code) answers kept per loaded knowledge base
MAX_SYSTEM_CHARS = 512

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"  # with the code, not in cards/
VALUESETS_DIR = "valuesets"
MEDICATIONS_FILE = "medications.yaml"


def canonical_system(system: object) -> str | None:
    # Real payloads carry odd JSON here (objects, lists): not a system, never a crash.
    if not system or not isinstance(system, str) or len(system) > MAX_SYSTEM_CHARS:
        return None
    system = system.strip()
    return SYSTEM_SYNONYMS.get(system, system)


def normalise_icd(code: str) -> str:
    """ICD-10-CM codes arrive with or without the dot ("C79.51" / "C7951"); compare without it."""
    return code.strip().upper().replace(".", "")


def is_overlong(code: object) -> bool:
    """A code no code system has: skipped wherever codes are matched (a data issue, not work)."""
    return isinstance(code, str) and len(code) > MAX_CODE_CHARS


def coding_list(concept: object) -> list[Any]:
    """`concept.coding` when it is an array, else nothing: a number, string or object there is
    malformed data (skipped), never something to iterate over."""
    if not isinstance(concept, Mapping):
        return []
    codings = concept.get("coding")
    return codings if isinstance(codings, list) else []


def _key(system: str | None, code: str | None) -> tuple[str, str] | None:
    system = canonical_system(system)
    if not system or not code or not isinstance(code, str) or len(code) > MAX_CODE_CHARS:
        return None
    code = code.strip()
    if system == ICD10CM:
        code = normalise_icd(code)
    return system, code


@dataclass(frozen=True)
class CodeEntry:
    system: str
    code: str | None  # exact code, or None for a prefix entry
    prefix: str | None  # ICD-10-CM prefix (normalised, no dot)
    display: str
    value: str | float | None  # answer meaning ("positive", "IIB", 4, "mass", ...)
    verified: bool
    exclude: bool  # an ICD-10-CM prefix carved out of a wider prefix of the same value set
    source: str = ""  # key into ValueSet.sources (for docs/knowledge.md)


@dataclass(frozen=True)
class ValueSet:
    id: str
    title: str
    kind: str
    codes: tuple[CodeEntry, ...]
    units: Mapping[str, float] = field(default_factory=dict)  # unit string -> factor to canonical
    unit: str | None = None  # canonical unit (labs, PSA)
    default_ref_high: float | None = None
    source_file: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)  # source id -> citation with its version


@dataclass(frozen=True)
class Ingredient:
    id: str
    name: str
    classes: frozenset[str]


@dataclass(frozen=True)
class ValueSets:
    """Compiled value sets; build with `load_valuesets`."""

    sets: Mapping[str, ValueSet] = field(default_factory=dict)
    exact: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    prefixes: Mapping[str, frozenset[str]] = field(default_factory=dict)  # ICD-10-CM only
    excluded: Mapping[str, frozenset[str]] = field(default_factory=dict)  # ICD-10-CM carve-outs
    values: Mapping[tuple[str, str, str], str | float] = field(default_factory=dict)  # (set, sys, code)
    ingredients: Mapping[str, Ingredient] = field(default_factory=dict)
    drug_index: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # -> ingredient ids
    # target phrases for reading report / problem text (cards/text/targets.yaml); None: the built-in
    text_targets: Any = None  # cds_service.knowledge.text_targets.TextTargets
    max_prefix_len: int = 8  # longest key of `prefixes` / `excluded` (set by load_valuesets)
    # (system, code) -> ids_for's answer: a chart repeats the same few hundred codings (issue 11)
    _memo: dict[tuple[str, str], frozenset[str]] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )

    def kind_of(self, set_id: str) -> str | None:
        vs = self.sets.get(set_id)
        return vs.kind if vs else None

    def ids_for(self, system: str | None, code: str | None) -> frozenset[str]:
        """Value-set ids containing this coding (exact code, or ICD-10-CM prefix)."""
        # memoised only within the length bounds _key enforces: memory bounded whatever is sent
        if type(system) is str and type(code) is str and len(code) <= MAX_CODE_CHARS and (
            len(system) <= MAX_SYSTEM_CHARS
        ):
            memo = self._memo
            found = memo.get((system, code))
            if found is None:
                if len(memo) >= _MEMO_SIZE:  # bounded whatever codes a client sends
                    memo.clear()
                found = memo[(system, code)] = self._ids_for(system, code)
            return found
        return self._ids_for(system, code)

    def _ids_for(self, system: str | None, code: str | None) -> frozenset[str]:
        key = _key(system, code)
        if key is None:
            return frozenset()
        found = self.exact.get(key, frozenset())
        if key[0] == ICD10CM and self.prefixes:
            code = key[1]
            hits: set[str] = set(found)
            carved: set[str] = set()
            # Only prefixes as long as the longest known one can hit: the loop is bounded by the
            # knowledge base, not by the code a client sends.
            for end in range(1, min(len(code), self.max_prefix_len) + 1):
                hits.update(self.prefixes.get(code[:end], ()))
                carved.update(self.excluded.get(code[:end], ()))
            found = frozenset(hits - carved)
        return found

    def ids_for_concept(self, concept: Mapping[str, Any] | None) -> frozenset[str]:
        """All codings of a CodeableConcept are synonyms: the union of their value sets."""
        # type(...) is dict first: JSON gives dicts, and an ABC isinstance is ten times slower
        if type(concept) is not dict and not isinstance(concept, Mapping):
            return frozenset()
        codings = concept.get("coding")
        if type(codings) is not list:
            return frozenset()
        found: frozenset[str] = frozenset()
        for coding in codings:
            if type(coding) is dict or isinstance(coding, Mapping):
                ids = self.ids_for(coding.get("system"), coding.get("code"))
                if ids:
                    found = found | ids if found else ids
        return found

    def value_in(self, set_id: str, concept: Mapping[str, Any] | None) -> list[str | float]:
        """The `value`s the codings of `concept` carry in value set `set_id` (answer lists)."""
        if not isinstance(concept, Mapping):
            return []
        out: list[str | float] = []
        for coding in coding_list(concept):
            if not isinstance(coding, Mapping):
                continue
            key = _key(coding.get("system"), coding.get("code"))
            if key is not None and (set_id, *key) in self.values:
                out.append(self.values[(set_id, *key)])
        return out

    def ingredients_for(self, concept: Mapping[str, Any] | None) -> tuple[str, ...]:
        """Ingredient ids of a medication CodeableConcept (ingredient, clinical drug or substance)."""
        if not isinstance(concept, Mapping):
            return ()
        out: list[str] = []
        for coding in coding_list(concept):
            if not isinstance(coding, Mapping):
                continue
            key = _key(coding.get("system"), coding.get("code"))
            for ingredient in self.drug_index.get(key, ()) if key else ():
                if ingredient not in out:
                    out.append(ingredient)
        return tuple(out)

    def codes_of(self, set_id: str) -> Iterable[CodeEntry]:
        vs = self.sets.get(set_id)
        return vs.codes if vs else ()


# --- loading ------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml_load.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise KnowledgeError(f"{path.name}: cannot read YAML: {exc}") from exc


def _schema(cards_dir: Path, name: str) -> jsonschema.protocols.Validator:
    path = SCHEMA_DIR / name
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KnowledgeError(f"{path.name}: cannot read schema: {exc}") from exc
    import jsonschema  # here: a start served from the knowledge cache never needs it

    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _check(validator: jsonschema.protocols.Validator, data: Any, path: Path) -> None:
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise KnowledgeError(f"{path.name}: {where}: {err.message}")


def _entry(raw: Mapping[str, Any], path: Path, index: int) -> CodeEntry:
    system = canonical_system(raw["system"]) or ""
    prefix = raw.get("prefix")
    if prefix is not None and system != ICD10CM:
        raise KnowledgeError(f"{path.name}: codes/{index}: prefix entries are allowed for ICD-10-CM only")
    if raw.get("exclude") and prefix is None:
        raise KnowledgeError(f"{path.name}: codes/{index}: exclude applies to ICD-10-CM prefix entries only")
    code = raw.get("code")
    if system == ICD10CM:
        code = normalise_icd(code) if code else None
        prefix = normalise_icd(prefix) if prefix else None
    return CodeEntry(
        system=system,
        code=str(code) if code is not None else None,
        prefix=prefix,
        display=raw.get("display", ""),
        value=raw.get("value"),
        verified=raw.get("verified", True),
        exclude=raw.get("exclude", False),
        source=raw["source"],
    )


def _load_valueset_file(path: Path, validator: jsonschema.protocols.Validator) -> ValueSet:
    data = _read_yaml(path)
    _check(validator, data, path)
    if path.stem != data["id"]:
        raise KnowledgeError(f"{path.name}: id: '{data['id']}' does not match the file name")
    sources = set(data["sources"])
    for i, raw in enumerate(data["codes"]):
        if raw["source"] not in sources:
            raise KnowledgeError(f"{path.name}: codes/{i}/source: '{raw['source']}' is not listed in sources")
    defaults = data.get("default_reference_range") or {}
    if defaults and defaults["source"] not in sources:
        raise KnowledgeError(
            f"{path.name}: default_reference_range/source: '{defaults['source']}' is not listed in sources"
        )
    return ValueSet(
        id=data["id"],
        title=data["title"],
        kind=data["kind"],
        codes=tuple(_entry(raw, path, i) for i, raw in enumerate(data["codes"])),
        units={str(k): float(v) for k, v in (data.get("units") or {}).items()},
        unit=data.get("unit"),
        default_ref_high=defaults.get("high"),
        source_file=path.name,
        sources={str(k): str(v) for k, v in data["sources"].items()},
    )


def _load_medications(
    cards_dir: Path,
) -> tuple[dict[str, Ingredient], dict[tuple[str, str], tuple[str, ...]]]:
    path = cards_dir / MEDICATIONS_FILE
    data = _read_yaml(path)
    _check(_schema(cards_dir, "medications.schema.json"), data, path)
    sources = set(data["sources"])
    ingredients: dict[str, Ingredient] = {}
    index: dict[tuple[str, str], list[str]] = {}

    def add(system: str, code: str, ingredient: str) -> None:
        key = _key(system, code)
        assert key is not None
        index.setdefault(key, [])
        if ingredient not in index[key]:
            index[key].append(ingredient)

    for i, raw in enumerate(data["ingredients"]):
        if raw["id"] in ingredients:
            raise KnowledgeError(f"{path.name}: ingredients/{i}/id: duplicate '{raw['id']}'")
        for ref in raw["sources"]:
            if ref not in sources:
                raise KnowledgeError(
                    f"{path.name}: ingredients/{i}/sources: '{ref}' is not listed in sources"
                )
        ingredients[raw["id"]] = Ingredient(raw["id"], raw["name"], frozenset(raw["classes"]))
        for code in raw.get("rxnorm", ()):
            add(RXNORM, str(code), raw["id"])
        for code in raw.get("snomed", ()):
            add(SNOMED, str(code), raw["id"])
    for i, raw in enumerate(data["clinical_drugs"]):
        if raw["source"] not in sources:
            raise KnowledgeError(f"{path.name}: clinical_drugs/{i}/source: '{raw['source']}' is not listed")
        for ingredient in raw["ingredients"]:
            if ingredient not in ingredients:
                raise KnowledgeError(
                    f"{path.name}: clinical_drugs/{i}/ingredients: unknown ingredient '{ingredient}'"
                )
            add(RXNORM, str(raw["rxnorm"]), ingredient)
    return ingredients, {k: tuple(v) for k, v in index.items()}


def load_valuesets(cards_dir: Path) -> ValueSets:
    """Load, schema-check and index every value set and the medication catalog.

    Raises KnowledgeError naming the file and the path inside it of the first problem.
    """
    cards_dir = Path(cards_dir)
    validator = _schema(cards_dir, "valuesets.schema.json")
    files = sorted((cards_dir / VALUESETS_DIR).glob("*.yaml"))
    if not files:
        raise KnowledgeError(f"{VALUESETS_DIR}/: no value-set files found")
    sets: dict[str, ValueSet] = {}
    exact: dict[tuple[str, str], set[str]] = {}
    prefixes: dict[str, set[str]] = {}
    excluded: dict[str, set[str]] = {}
    values: dict[tuple[str, str, str], str | float] = {}
    for path in files:
        vs = _load_valueset_file(path, validator)
        sets[vs.id] = vs
        for entry in vs.codes:
            if entry.prefix is not None:
                target = excluded if entry.exclude else prefixes
                target.setdefault(entry.prefix, set()).add(vs.id)
                continue
            key = (entry.system, entry.code or "")
            exact.setdefault(key, set()).add(vs.id)
            if entry.value is not None:
                values[(vs.id, *key)] = entry.value
    ingredients, drug_index = _load_medications(cards_dir)
    return ValueSets(
        sets=sets,
        exact={k: frozenset(v) for k, v in exact.items()},
        prefixes={k: frozenset(v) for k, v in prefixes.items()},
        excluded={k: frozenset(v) for k, v in excluded.items()},
        values=values,
        ingredients=ingredients,
        drug_index=drug_index,
        text_targets=load_text_targets(cards_dir),
        max_prefix_len=max((len(p) for p in (*prefixes, *excluded)), default=0),
    )
