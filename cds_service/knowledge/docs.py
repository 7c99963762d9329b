"""Generate docs/knowledge.md from the knowledge base (`python -m cds_service.knowledge.docs`).

The document is derived data: a test asserts the committed file equals `render(load_knowledge())`,
so editing a rule file without regenerating (`make docs`) fails the suite.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from cds_service import yaml_load
from cds_service.knowledge import DEFAULT_CARDS_DIR, Knowledge, load_knowledge
from cds_service.knowledge.cases import DEFAULT_CASES_DIR, RuleCases, cases_by_rule
from cds_service.knowledge.model import Rating, Scenario
from cds_service.knowledge.site import SiteConfig

DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "knowledge.md"
SHORT = {"usually-appropriate": "UA", "may-be-appropriate": "MBA", "usually-not-appropriate": "UNA"}
# The text reader's target phrases (owned by the text stage); only their concept/finding ids are shown.
TEXT_TARGETS = Path("text") / "targets.yaml"
KIND_TITLES = {
    "condition": "Conditions, symptoms and findings (Condition.code, order reasons)",
    "observation": "Observations (Observation.code)",
    "answer": "Coded answers (Observation.value[x])",
    "procedure": "Procedures (Procedure.code)",
    "imaging-modality": "Prior imaging (report / procedure codes)",
    "imaging-finding": "Imaging findings (DiagnosticReport.conclusionCode)",
    "body-site": "Body sites (Condition.bodySite of a secondary cancer)",
}
SYSTEM_LABELS = {
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://snomed.info/sct": "SNOMED CT",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://www.ama-assn.org/go/cpt": "CPT",
    "urn:oid:2.16.840.1.113883.6.285": "HCPCS",
    "http://dicom.nema.org/resources/ontology/DCM": "DICOM",
}


KIND_LABELS = {
    "acr": "ACR rating",
    "translated": "another guideline's statement translated by the project (not an ACR rating)",
    "seed": "source-article recommendation without a category",
}
MAX_LISTED_CASES = 12
NO_RATING = "none: the rule rates no study (it says why no criteria apply)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rating_kind(r: Rating) -> str:
    return "ACR" if r.is_acr else f"translated ({r.guideline})"


def _scenario_kinds(s: Scenario) -> str:
    kinds = []
    for kind in s.source_kinds:
        label = KIND_LABELS[kind]
        if kind == "translated":
            label += " from " + ", ".join(s.translated_from)
        kinds.append(label)
    return "; ".join(kinds) or NO_RATING


def _case_names(names: tuple[str, ...], rule_id: str) -> str:
    if len(names) > MAX_LISTED_CASES:
        return f"{len(names)} cases (listed on `/rules/{rule_id}`)"
    return ", ".join(f"`{n}`" for n in names)


def case_lines(rule_id: str, cases: RuleCases | None) -> list[str]:
    """The e2e fixture cases (fixtures/cases/) that pin this rule firing and not firing."""
    if not cases:
        return ["- e2e cases: none"]
    out = []
    if cases.fires:
        out.append(f"- e2e cases where it fires: {_case_names(cases.fires, rule_id)}")
    if cases.absent:
        out.append(f"- e2e cases where it must not fire: {_case_names(cases.absent, rule_id)}")
    return out


def _overview(k: Knowledge) -> list[str]:
    columns = [(s, v) for s in k.scenarios for v in s.variants]
    head = ["Study", "RRL"] + [f"{s.id}" + (f" ({v.id})" if len(s.variants) > 1 else "") for s, v in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in k.catalog.procedures.values():
        if p.component_only:
            continue
        cells = []
        for s, v in columns:
            r = v.ratings.get(p.id)
            cells.append(SHORT[r.category] if r else ("rec." if p.id in s.recommended else ""))
        if any(cells):
            lines.append("| " + " | ".join([_cell(p.display), p.rrl_symbol, *cells]) + " |")
    return lines


def _scenario(s: Scenario, k: Knowledge, cases: RuleCases | None = None) -> list[str]:
    procs = k.catalog.procedures
    out = [
        f"### `{s.id}`: {s.title}",
        "",
        _cell(s.description),
        "",
        f"- Source kind: {_scenario_kinds(s)}",
        f"- Source: {s.acr_citation}; source articles: {'; '.join(k.texts.cite(x) for x in s.seeds)}",
        f"- Reviewed: {s.reviewed}",
        f"- Kind: {s.kind}, priority {s.priority}",
        *case_lines(s.id, cases),
    ]
    if s.requires:
        out.append("- Facts required: " + "; ".join(r.label for r in s.requires))
    if s.urgent_procedure:
        out.append(f"- Urgent study: {procs[s.urgent_procedure].display}")
    if s.pitfalls:
        out.append("- Pitfalls checked: " + ", ".join(f"`{p}`" for p in s.pitfalls))
    for v in s.variants:
        out += ["", f"**{v.title}**" + (" (when the variant criteria hold)" if v.when else ""), ""]
        if v.ratings:
            out += ["| Study | Category | Source kind | RRL | Source |", "|---|---|---|---|---|"]
            out += [
                f"| {_cell(procs[r.procedure_id].display)} | {k.texts.category_labels[r.category]} | "
                f"{_rating_kind(r)} | {procs[r.procedure_id].rrl_text} | {_cell(r.source)} |"
                for r in v.ratings.values()
            ]
        else:
            out.append("No ACR-rated studies; every order gets `no-criteria-apply`.")
    if s.recommended:
        out += ["", "Recommended by the source without an ACR category:", ""]
        out += [f"- {procs[p].display} ({procs[p].rrl_text}): {note}" for p, note in s.recommended.items()]
    return out + [""]


def _unrated_orders(k: Knowledge) -> list[str]:
    """How an order the matched scenario does not rate is answered (engine/coverage.py)."""
    procs = k.catalog.procedures
    inherit = [
        f"`{s.id}` ({v.id}): {procs[r.procedure_id].display}: {_cell(r.applies_to_parts or '')}"
        for s in k.scenarios
        for v in s.variants
        for r in v.ratings.values()
        if r.applies_to_parts
    ]
    return [
        "## Orders the scenario does not rate",
        "",
        "EHRs order one code at a time (CT chest, then CT abdomen/pelvis). Orders that together make a "
        "catalog study (`components` / `component_sets`) are rated as that study. An order the matched "
        "variant does not rate is never answered silently, and never with an invented category:",
        "",
        "- **Part** of a rated study (`components`, `part_of`, transitively: CT chest of CT C/A/P, a "
        "limited bone scan of a whole-body one): no category of its own (`no-criteria-apply`); the card "
        "names the rated study, its category and what the part misses, and offers to add the missing "
        "parts. The part takes the combination's category only when the combination is rated *usually "
        "not appropriate* and the rule states, in `applies_to_parts`, that the source's reason holds for "
        "each part alone (listed below). A *usually appropriate* never carries over to a part: a part "
        "that misses the liver is not the survey the source rated.",
        "- **Other contrast protocol** (`family`) of a rated study, alone or as part of one (CT chest "
        "without contrast vs CT C/A/P with contrast): no category; the card says what differs.",
        "- **Wider** than a rated study (CT C/A/P where only CT abdomen/pelvis is rated): no category; the "
        "card says what the order adds and offers the rated study.",
        "- **Recommended** by the source without a category: the card quotes the recommendation.",
        "- Otherwise the card says the source gives no rating for this study and names the rated ones.",
        "",
        "Suggestions never propose a study rated usually not appropriate, nor iodinated contrast when "
        "the kidney caution fires. With no recognised scenario nothing is shown. Parts that take the "
        "combination's category:",
        "",
        *[f"- {line}" for line in inherit],
        "",
    ]


def _catalog(k: Knowledge) -> list[str]:
    out = [
        "| Procedure id | Study | Modality | Contrast | RRL | Codes (unverified marked [I]) |",
        "|---|---|---|---|---|---|",
    ]
    for p in k.catalog.procedures.values():
        if p.join_sets:
            codes = "combination of " + " or ".join(" + ".join(f"`{c}`" for c in s) for s in p.join_sets)
            codes += "".join(f"; {c.code}" + ("" if c.verified else " [I]") for c in p.codes)
        elif p.pet_tracer:
            tracers = [t for t in k.catalog.tracers.values() if t.procedure == p.id]
            codes = "PET/CT + tracer " + ", ".join(f"{t.code}{'' if t.verified else ' [I]'}" for t in tracers)
        else:
            codes = (
                ", ".join(f"{c.code}{'' if c.verified else ' [I]'}" for c in p.codes) or "no specific code"
            )
        if p.part_of:
            codes += "; part of " + ", ".join(f"`{c}`" for c in p.part_of)
        if p.family:
            codes += f"; contrast family `{p.family}`"
        rrl = p.rrl_symbol + ("" if p.rrl_verified else " [I]")
        out.append(f"| `{p.id}` | {_cell(p.display)} | {p.modality} | {p.contrast} | {rrl} | {codes} |")
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _code_summary(vs: Any) -> str:
    listed = Counter(SYSTEM_LABELS.get(c.system, c.system) for c in vs.codes if not c.prefix)
    categories = sum(1 for c in vs.codes if c.prefix and not c.exclude)
    carved = sum(1 for c in vs.codes if c.exclude)
    parts = [f"{label} {_plural(n, 'code')}" for label, n in sorted(listed.items())]
    if categories:
        parts.append(f"ICD-10-CM {_plural(categories, 'category')} with their descendants")
    if carved:
        parts.append(f"{carved} ICD-10-CM carved out")
    unverified = sum(1 for c in vs.codes if not c.verified)
    if unverified:
        parts.append(f"{unverified} unverified [I]")
    return "; ".join(parts)


def _valuesets(k: Knowledge) -> list[str]:
    """Per concept (value-set id): what it holds and where each code comes from, with versions."""
    out = [
        "Facts are read by (system, code) only; all codings of a CodeableConcept are synonyms. ICD-10-CM "
        "is matched by category (a category covers its descendants); SNOMED CT is never matched by "
        "hierarchy, so the descendants relied on are listed one by one in `cards/valuesets/<id>.yaml`. "
        "Every ICD-10-CM code and category listed is checked to exist in ICD-10-CM by the test suite.",
        "",
    ]
    sets = sorted(k.valuesets.sets.values(), key=lambda v: (list(KIND_TITLES).index(v.kind), v.id))
    kind = None
    for vs in sets:
        if vs.kind != kind:
            kind = vs.kind
            out += [f"### {KIND_TITLES[kind]}", ""]
        out += [f"- `{vs.id}`: {vs.title}. Codes: {_code_summary(vs)}. Sources:"]
        used = Counter(c.source for c in vs.codes)
        for source_id, citation in vs.sources.items():
            count = used.get(source_id, 0)
            codes = _plural(count, "code") if count else "reference range"
            out.append(f"  - `{source_id}` ({codes}): {_cell(citation)}")
    return out + [""]


def _text_facts(cards_dir: Path) -> list[str]:
    """Which concepts and imaging findings the text reader may produce, from its data file."""
    path = cards_dir / TEXT_TARGETS
    if not path.is_file():
        return ["none", ""]
    data = yaml_load.safe_load(path.read_text(encoding="utf-8")) or {}
    produced: dict[str, list[str]] = {}
    for target in data.get("targets") or ():
        tid = str(target.get("id"))
        for fact in [*(target.get("concepts") or ()), *(target.get("findings") or ())]:
            produced.setdefault(str(fact), []).append(tid)
        for fact in target.get("negated_findings") or ():  # "no osseous metastases"
            produced.setdefault(str(fact), []).append(f"{tid} (negated)")
        for fact in target.get("historical") or ():  # "history of breast cancer"
            produced.setdefault(str(fact), []).append(f"{tid} (historical)")
    if not produced:
        return ["none", ""]
    out = [
        f"Read from report and problem text only where a resource has no usable code (`{TEXT_TARGETS}`). "
        "A fact from text is marked so on the card, carries lower confidence and never by itself "
        "lowers a rating to usually not appropriate.",
        "",
        "| Concept or imaging finding | Text targets |",
        "|---|---|",
    ]
    out += [f"| `{fact}` | {', '.join(f'`{t}`' for t in ids)} |" for fact, ids in sorted(produced.items())]
    return out + [""]


def _site_section(k: Knowledge, site: SiteConfig) -> list[str]:
    """What one site changed, with who approved each rule change, when and why."""
    procs = k.catalog.procedures
    out = [
        f"## Site configuration: {_cell(site.site or site.file)}",
        "",
        f"Site file `{site.file}`, version **{site.version}** (recorded in every audit row). The rules "
        "below are the knowledge base's; this site's changes are listed here and marked where they apply.",
        "",
    ]
    if site.contact:
        out.append(f"- Contact added to every card: [{_cell(site.contact[0])}]({site.contact[1]})")
    if site.unavailable:
        listed = ", ".join(f"`{e}`" for e in site.unavailable_listed)
        names = "; ".join(procs[p].display for p in sorted(site.unavailable))
        out.append(
            f"- Not offered here ({listed}): {names}. Never suggested; the rule's study of the same kind "
            "is suggested instead, and an order for one is rated and told it is not offered here."
        )
    for rule_id, o in site.rules.items():
        out.append(f"- `{rule_id}`: {_cell(o.sentence)}")
    for service_id, svc in site.services.items():
        parts = [f"quiet {'on' if svc.quiet else 'off'}"] if svc.quiet is not None else []
        parts += [f"snooze {svc.snooze_hours:g} hours"] if svc.snooze_hours is not None else []
        out.append(f"- Service `{service_id}`: {', '.join(parts)}")
    for pid, name in site.display_names.items():
        out.append(f"- `{pid}` is called \"{_cell(name)}\" here (catalog: {procs[pid].display})")
    return out + [""]


def _site_mark(site: SiteConfig | None, rule_id: str) -> list[str]:
    override = site.rules.get(rule_id) if site else None
    return [f"- **At this site**: {_cell(override.sentence)}"] if override else []


def render(
    k: Knowledge,
    cards_dir: Path = DEFAULT_CARDS_DIR,
    cases_dir: Path = DEFAULT_CASES_DIR,
    site: SiteConfig | None = None,
) -> str:
    """The document; with `site`, for that site (its changes listed and marked where they apply)."""
    texts = k.texts
    cases = cases_by_rule(cases_dir)
    generated = (
        "<!-- Generated by `python -m cds_service.knowledge.docs` (make docs) from cards/; do not edit. -->"
    )
    if site:
        generated = (
            f"<!-- Generated by `python -m cds_service.knowledge.docs --site {site.file}` (make docs "
            f"SITE={site.file}) from cards/ and the site file; do not edit. -->"
        )
    lines = [
        "# Knowledge base" + (f" at {site.site or site.file}" if site else ""),
        "",
        generated,
        "",
        f"Knowledge version **{k.version}**. Categories: UA usually appropriate, MBA may be appropriate, "
        "UNA usually not appropriate, rec. recommended by the source without an ACR category. A study a "
        "scenario does not list is rated `no-criteria-apply` (answered by a card, see below); no category "
        "is ever invented. RRL is the "
        "ACR adult relative radiation level (O = 0 mSv ... ☢☢☢☢☢ = 30-100 mSv).",
        "",
        "Source kinds: **ACR** = an ACR Appropriateness Criteria category (topic, variant, version); "
        "**translated** = a statement of another guideline (AUA, NCCN, EAU, CMS eCQM) that the project "
        "translated into a category: the card says so and the rating extension carries it as "
        "`translatedCategory`, never as the ACR `category`; **seed** = a recommendation of a source "
        "article without a category. *Reviewed* is the date the rule's ratings and citations were last "
        "checked against its sources. *e2e cases* are the fixture cases in `fixtures/cases/` that pin "
        "the rule firing or not firing. A rule-text sentence holding the clinical reference's mark for an "
        "unverified figure, `[I]`, is never shown on a card and is labelled unverified on the rule page.",
        "",
        *(_site_section(k, site) if site else []),
        "## Scenario × procedure",
        "",
        *_overview(k),
        "",
        *_unrated_orders(k),
        "## Scenarios",
        "",
    ]
    for s in k.scenarios:
        section = _scenario(s, k, cases.get(s.id))
        lines += section[:1] + ["", *_site_mark(site, s.id)] + section[2:] if site else section
    lines += [
        "## Pitfalls and modifiers",
        "",
        "| Id | Applies to | Indicator | Source kind | Reviewed | e2e cases (fires / must not fire) "
        "| Sources |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in k.pitfalls.values():
        applies = sorted(p.applies_procedures) + [f"{c} contrast" for c in sorted(p.applies_contrast)]
        kind = p.source_kind + (f" ({p.guideline})" if p.guideline else "")
        pc = cases.get(p.id) or RuleCases()
        used = f"{_case_names(pc.fires, p.id) or 'none'} / {_case_names(pc.absent, p.id) or 'none'}"
        indicator = p.indicator
        override = site.rules.get(p.id) if site else None
        if override:
            indicator = "switched off here" if override.off else f"{p.indicator} → {override.indicator} here"
        lines.append(
            f"| `{p.id}` | {', '.join(applies)} | {indicator} | {kind} | {p.reviewed} | {used} | "
            f"{_cell('; '.join(p.sources))} |"
        )
    lines += [
        "",
        "## Procedure catalog",
        "",
        *_catalog(k),
        "",
        "## Value sets per concept",
        "",
        *_valuesets(k),
        "## Facts that may come from text",
        "",
        *_text_facts(cards_dir),
        "Stage group, TNM categories and Gleason / ISUP grade group are also read from written "
        'notation ("Stage IIA", "cT2b", "T2bN0M0", "Gleason 3+4=7", "Grade group 1") in the value of a '
        "staging Observation, a staging Observation coded by text only, or `Condition.stage.summary` "
        "text, by a strict notation parser (`cds_service/facts/stage_notation.py`), not by the prose "
        "reader: such a value is a structured staging entry written out, so it counts like a coded "
        "one; the card quotes the original string, and ambiguous notation is reported, never guessed.",
        "",
        "## Identifiers used in responses",
        "",
        f"- Rating extension on each rated ServiceRequest: `{texts.rating_extension_url}` with "
        "sub-extensions `category` (valueCode, ACR category; only for a rating of source kind ACR), "
        "`translatedCategory` (valueCode, the project's translation of another guideline's statement), "
        "`sourceKind` (valueCode: acr or translated; absent when not rated), `scenario`, `rule`, "
        "`procedure` (valueCode), `unknownFact` (valueCode, repeated: a fact the record does not give "
        "and that no possible value of would change the rating, e.g. `t-category`) and "
        "`knowledgeVersion` (valueString), next to the Argonaut `pama-rating` and "
        "`pama-rating-consult-id` extensions.",
        "- Partial facts (`cds_service/engine/completions.py`): when a scenario's required fact is "
        "partly known (risk group: grade group 1-5, PSA < 10 / 10-20 / > 20 ng/mL, T1 ... T4 or the T2 "
        "sub-category; PSA trend after local therapy: an earlier PSA), every value of the missing "
        "inputs is tried. All give the same rating: the order is rated, with `unknownFact`. They "
        "disagree: no rating, and an info card (rule `insufficient-data`) names only the facts that "
        "could change it and which value would; its CDS Hooks `extension.missingFacts` lists their "
        "codes (`grade-group`, `psa`, `t-category`, `t-subcategory`, `psa-trend`). Nothing known: the "
        "insufficient-data card.",
        f"- Card override reasons: CodeSystem `{texts.override_system}`: "
        + "; ".join(f"`{c}` {d}" for c, d in texts.override_reasons)
        + ".",
        f"- Card `source.topic`: CodeSystem `{texts.rule_system}`, code = rule id "
        "(scenario, pitfall or outcome id; page at `/rules/<id>`).",
        f"- `canonical_base` ({texts.canonical_base}) is set in `cards/texts/general.yaml`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the document is out of date")
    parser.add_argument("--site", type=Path, help="a site file (CDS_SITE_CONFIG): the document for that site")
    parser.add_argument("--output", type=Path, default=DOCS_PATH, help=f"default {DOCS_PATH}")
    args = parser.parse_args(argv)
    knowledge = load_knowledge()
    site = None
    if args.site is not None:
        from cds_service.knowledge.site import SiteConfigError, load_site
        from cds_service.protocol.discovery import SERVICES

        try:
            site = load_site(args.site, knowledge, [s.id for s in SERVICES])
        except SiteConfigError as exc:
            print(f"docs: {exc}", file=sys.stderr)
            return 2
    text = render(knowledge, site=site)
    path: Path = args.output
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is out of date; run `make docs`", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
