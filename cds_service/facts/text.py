"""Clinical text -> mentions of concepts and imaging findings, with negation and uncertainty.

Read only where a resource carries no usable code (a DiagnosticReport without conclusionCode, a
Condition without a coding that has both system and code, an order reason given as text): coded
data is never re-read from its text.

The reading is medspaCy's: PyRuSH sentence splitting, a target matcher built from the phrases and
token patterns of cards/text/targets.yaml, a sectionizer (text under "Indication:", "History:",
"Technique:" ... is the question asked, not the answer, and is not read), and ConText, which marks
each mention negated, uncertain, historical, hypothetical or about a family member. The default
ConText rules are adjusted by the same file (e.g. "evaluate for X" is a suspicion of X, not its
absence).

How a mention counts (see `affirmed` and `report_findings`):
- negated, hypothetical, historical or family mentions never count as present;
- an *uncertain* mention ("suspicious for", "rule out", "concern for", "consistent with") counts as
  present: for red flags and pitfalls suspicion is the point. It never lowers a rating on its own,
  because every fact from text is marked `from_text` and the engine rates an order with coded facts
  only when text alone would make it "usually not appropriate" (cds_service.engine);
- a negated, certain mention of a target with `negated_findings` gives that finding (a bone scan
  reading "no scintigraphic evidence of osseous metastatic disease" = no-bone-metastases); a
  negated uncertain mention gives nothing (neither present nor absent);
- a historical mention of a target with `historical` concepts gives those ("history of breast
  cancer" -> history-of-breast-cancer), when the vocabulary has them.

The pipeline is built once per target set (at application start through `warm_up`, or lazily at
first use) and results are cached by a digest of the text in a bounded LRU: the same report comes
with every hook call of an ordering session.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import types
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from cds_service.knowledge.text_targets import TextTarget, TextTargets, load_text_targets
from cds_service.model import Evidence

log = logging.getLogger(__name__)

SNIPPET_CHARS = 160
MAX_TEXT_CHARS = 20_000  # a long report is read up to here (cost is linear in the text)
CACHE_SIZE = 4096
SKIP = "skip"
READ = "read"


@dataclass(frozen=True)
class Mention:
    """One target phrase found in a text, with its ConText modifiers."""

    target: str  # concept id, finding id or modality id
    # "concept" | "finding" | "modality", or "absence": `target` is the finding a *negated* mention
    # states ("no osseous metastases" -> no-bone-metastases); an affirmed absence mention means nothing
    kind: str
    snippet: str  # the sentence, trimmed to about SNIPPET_CHARS characters
    negated: bool = False
    uncertain: bool = False
    historical: bool = False
    hypothetical: bool = False
    family: bool = False
    rule: str = ""  # id of the target rule in cards/text/targets.yaml that matched

    @property
    def certain_and_current(self) -> bool:
        """Stated for this patient, now, without hedging (what an absence needs to count)."""
        return not (self.uncertain or self.hypothetical or self.historical or self.family)

    @property
    def affirmed(self) -> bool:
        """Present in the text, possibly only suspected (uncertain counts; see the module doc)."""
        return not (self.negated or self.hypothetical or self.historical or self.family)


# --- the pipeline -----------------------------------------------------------------------------


def _skip_quickumls() -> None:
    """medspaCy 1.3 imports its QuickUMLS component unconditionally (medspacy/util.py), and that
    imports NLTK: ~20 MB per worker and half a second at start for a component this service never
    enables (it needs UMLS licence data). Registering an empty module under that name first keeps it
    out; the pipeline below never asks for "medspacy_quickumls". Left alone if already imported."""
    if "quickumls" in sys.modules:
        return
    stub = types.ModuleType("quickumls")
    stub.spacy_component = types.ModuleType("quickumls.spacy_component")  # type: ignore[attr-defined]
    sys.modules["quickumls"] = stub
    sys.modules["quickumls.spacy_component"] = stub.spacy_component


class _Pipeline:
    def __init__(self, targets: TextTargets) -> None:
        _quiet_loggers()
        _skip_quickumls()
        import medspacy
        from medspacy.context import ConTextRule
        from medspacy.section_detection import SectionRule
        from medspacy.target_matcher import TargetRule

        self.targets = {t.id: t for t in targets.targets}
        nlp = medspacy.load(medspacy_enable=["medspacy_pyrush", "medspacy_target_matcher"])
        rules = []
        for t in targets.targets:
            rules += [TargetRule(p, t.id) for p in t.phrases]
            rules += [TargetRule(f"{t.id}#{i}", t.id, pattern=list(p)) for i, p in enumerate(t.patterns)]
        nlp.get_pipe("medspacy_target_matcher").add(rules)
        sectionizer = nlp.add_pipe("medspacy_sectionizer", config={"rules": None})
        # headings as token patterns (tokenised like the text): case-insensitive, and the
        # sectionizer's token matcher is not left empty (spaCy would warn on every call)
        def heading(h: str, category: str) -> Any:
            return SectionRule(h, category, pattern=[{"LOWER": t.lower_} for t in nlp.tokenizer(h)])

        sectionizer.add(
            [heading(h, SKIP) for h in targets.skip_sections]
            + [heading(h, READ) for h in targets.read_sections]
        )
        context = nlp.add_pipe("medspacy_context", config={"rules": None})
        context.add(_context_rules(targets, ConTextRule))
        self.nlp = nlp
        self.lock = threading.Lock()  # spaCy pipelines are not documented as thread-safe

    def read(self, text: str) -> tuple[Mention, ...]:
        text = text[:MAX_TEXT_CHARS].rstrip()
        closed = bool(text) and text[-1].isalnum()
        if closed:
            text += "."  # close the last clause, so "Seizure: no" reads like "Seizure: no."
        with self.lock:
            doc = self.nlp(text)
        out: list[Mention] = []
        for ent in doc.ents:
            if ent._.section_category == SKIP:
                continue
            target = self.targets.get(ent.label_)
            if target is None:
                continue
            flags = {
                "negated": bool(ent._.is_negated),
                "uncertain": bool(ent._.is_uncertain),
                "historical": bool(ent._.is_historical),
                "hypothetical": bool(ent._.is_hypothetical),
                "family": bool(ent._.is_family),
            }
            sentence = ent.sent.text
            if closed and ent.sent.end_char == len(text):
                sentence = sentence[:-1]  # quote the text as written, without the added stop
            snippet = _snippet(sentence, ent.start_char - ent.sent.start_char, len(ent.text))
            out += [Mention(c, "concept", snippet, rule=target.id, **flags) for c in target.concepts]
            out += [Mention(f, "finding", snippet, rule=target.id, **flags) for f in target.findings]
            out += [Mention(f, "absence", snippet, rule=target.id, **flags) for f in target.negated_findings]
            if target.modality:
                out.append(Mention(target.modality, "modality", snippet, rule=target.id, **flags))
        return tuple(dict.fromkeys(out))


def _context_rules(targets: TextTargets, rule_cls: Any) -> list[Any]:
    import medspacy.context.context as context_module

    default_path = (
        Path(context_module.__file__).resolve().parents[2] / "resources" / "en" / "context_rules.json"
    )
    rules = rule_cls.from_json(str(default_path))
    dropped = {c.replaces for c in targets.context if c.replaces} | {
        c.literal for c in targets.context if c.remove
    }
    rules = [r for r in rules if r.literal not in dropped]
    for c in targets.context:
        if c.remove:
            continue
        pattern = [dict(p) for p in c.pattern] if c.pattern is not None else None
        rules.append(rule_cls(c.literal, c.category, pattern=pattern, direction=c.direction))
    return rules


class _FastNERNoise(logging.Filter):
    """PyFastNER (inside PyRuSH) logs on the *root* logger, at INFO, a line for every sentence rule it
    cannot compile, each time it splits a new text: some 60-90 lines per report, in the service's log
    and on its cold path. Only those records are dropped; everything else on the root logger stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and f"{os.sep}PyFastNER{os.sep}" in record.pathname)


_FASTNER_NOISE = _FastNERNoise()


def _quiet_loggers() -> None:
    # PyRuSH and medspaCy log through loguru at DEBUG, one line per token: silence both packages
    # (the service logs through the stdlib `logging`; loguru's own handlers are left alone).
    logging.getLogger().addFilter(_FASTNER_NOISE)  # idempotent: a logger keeps one copy of a filter
    try:
        from loguru import logger
    except ImportError:  # pragma: no cover - loguru comes with PyRuSH
        return
    for name in ("PyRuSH", "medspacy"):
        logger.disable(name)


def _snippet(sentence: str, start: int, length: int) -> str:
    text = " ".join(sentence.split())
    if len(text) <= SNIPPET_CHARS:
        return text
    # keep the mention in view: a window around it, marked as cut
    raw_prefix = " ".join(sentence[:start].split())
    centre = len(raw_prefix) + length // 2
    lo = max(0, min(centre - SNIPPET_CHARS // 2, len(text) - SNIPPET_CHARS))
    window = text[lo : lo + SNIPPET_CHARS].strip()
    return ("…" if lo > 0 else "") + window + ("…" if lo + SNIPPET_CHARS < len(text) else "")


_pipelines: dict[str, _Pipeline] = {}
_build_lock = threading.Lock()
_results: OrderedDict[tuple[str, bytes], tuple[Mention, ...]] = OrderedDict()
_results_lock = threading.Lock()


def _pipeline(targets: TextTargets) -> _Pipeline:
    found = _pipelines.get(targets.digest)
    if found is not None:
        return found
    with _build_lock:
        if targets.digest not in _pipelines:
            _pipelines[targets.digest] = _Pipeline(targets)
        return _pipelines[targets.digest]


@cache
def builtin_targets() -> TextTargets:
    """The targets of the built-in knowledge base, for callers that hold no loaded knowledge."""
    from cds_service.knowledge import DEFAULT_CARDS_DIR

    return load_text_targets(DEFAULT_CARDS_DIR)


def check_installed() -> None:
    """Refuse to start without spaCy and medspaCy, without importing them (~1 s, +45 MB): with the
    reader loaded at first use, a missing package would otherwise surface on a patient's call."""
    import importlib.util

    missing = [name for name in ("spacy", "medspacy", "PyRuSH") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"the clinical text reader needs {', '.join(missing)}: install the package")


def warm_up(targets: TextTargets | None = None) -> None:
    """Build the pipeline now (import + load ~1 s), so the first hook call does not pay for it."""
    _pipeline(targets or builtin_targets()).read("No bone metastases.")


def clear_cache() -> None:
    """Forget cached readings (the benchmark's cold-path measurement and tests use this)."""
    with _results_lock:
        _results.clear()


# --- public API -----------------------------------------------------------------------------


def mentions(text: str, targets: TextTargets | None = None) -> tuple[Mention, ...]:
    """Every target mention in `text` (in order), with negation / uncertainty / history flags."""
    if not isinstance(text, str) or not text.strip():
        return ()
    targets = targets or builtin_targets()
    key = (targets.digest, hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).digest())
    with _results_lock:
        if key in _results:
            _results.move_to_end(key)
            return _results[key]
    try:
        found = _pipeline(targets).read(text)
    except ImportError:
        raise  # medspaCy missing is an installation error: fail loudly (at start, via warm_up)
    except Exception as exc:  # odd text must never turn a hook call into a 500
        # the type only: the text is patient data and is never logged
        log.warning("text: could not read a text of %d characters (%s)", len(text), type(exc).__name__)
        return ()
    with _results_lock:
        _results[key] = found
        if len(_results) > CACHE_SIZE:
            _results.popitem(last=False)
    return found


def concept_mentions(found: Iterable[Mention], targets: TextTargets) -> list[tuple[str, Mention]]:
    """(concept id, mention) for every mention that makes a concept present."""
    out: list[tuple[str, Mention]] = []
    for m in found:
        if m.kind != "concept":
            continue
        if m.affirmed:
            out.append((m.target, m))
        elif m.historical and not (m.negated or m.hypothetical or m.family):
            rule: TextTarget | None = targets.by_id(m.rule)
            out += [(h, m) for h in (rule.historical if rule else ())]
    return out


def affirmed_concepts(
    text: str,
    as_of: date | None,
    source: str | None,
    *,
    from_order: bool = False,
    targets: TextTargets | None = None,
) -> dict[str, list[Evidence]]:
    """concept id -> evidence for each concept the text says is present (suspected counts).

    Evidence.text is the quoted sentence; Evidence.from_text is set, and from_order when the text
    is the draft order's own reason. `as_of` is the date the evidence carries.
    """
    targets = targets or builtin_targets()
    out: dict[str, list[Evidence]] = {}
    for concept, m in concept_mentions(mentions(text, targets), targets):
        evidence = Evidence(
            text=f"'{m.snippet}'", date=as_of, source=source, from_text=True, from_order=from_order
        )
        bucket = out.setdefault(concept, [])
        if evidence not in bucket:
            bucket.append(evidence)
    return out


@dataclass(frozen=True)
class ReportReading:
    findings: frozenset[str]
    quotes: tuple[str, ...]  # the sentences the findings were read from, in text order
    concepts: tuple[tuple[str, str], ...] = ()  # (concept id, sentence) for report-borne concepts


def report_findings(text: str, targets: TextTargets | None = None) -> ReportReading:
    """Imaging findings a report text states (suspected ones included; see the module doc)."""
    targets = targets or builtin_targets()
    present: dict[str, list[str]] = {}
    absent: dict[str, list[str]] = {}
    concepts: list[tuple[str, str]] = []
    found = mentions(text, targets)
    for m in found:
        if m.kind == "concept" and m.affirmed:
            concepts.append((m.target, m.snippet))
        if m.kind == "finding" and m.affirmed:
            present.setdefault(m.target, []).append(m.snippet)
        elif m.kind == "absence" and m.negated and m.certain_and_current:
            absent.setdefault(m.target, []).append(m.snippet)
    # A report that affirms anywhere what its negation would deny is not negative: one lesion is
    # metastatic disease whatever "no other ..." / "no new ..." says elsewhere in the text.
    for m in found:
        if m.kind == "absence" and m.affirmed:
            absent.pop(m.target, None)
    if "bone-metastases" in present:
        absent.pop("no-bone-metastases", None)
    findings = {**present, **absent}
    quotes = tuple(dict.fromkeys(q for qs in findings.values() for q in qs))
    return ReportReading(frozenset(findings), quotes, tuple(dict.fromkeys(concepts)))


def modality_from_text(text: str, targets: TextTargets | None = None) -> frozenset[str]:
    """Modalities named (affirmed) in a report's code.text, e.g. "NM bone scan whole body"."""
    return frozenset(m.target for m in mentions(text, targets) if m.kind == "modality" and m.affirmed)
