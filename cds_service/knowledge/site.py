"""One hospital's configuration (`CDS_SITE_CONFIG`): what it does not offer, which rules it switched
off or shows as info (each with who approved it and why), quiet mode and snooze per service, its
radiology consult link and its own names for studies.

The file is checked at start against `schema/site.schema.json` (shipped with the code, like the
knowledge base's schemas) and then against the loaded knowledge: every procedure, rule and service id
must exist, and red flags can never be switched off or downgraded. Errors name the file and the
field (`site.yaml: unavailable[1]: 'psma-pet-mri' is not a catalog procedure; did you mean
'psma-pet-ct'?`) and stop the start like any other configuration error (exit status 2).

The engine never reads the file: `site_view` turns the knowledge base into the view a site sees
(switched-off rules gone, downgraded pitfalls as info, local study names, `Knowledge.local` holding
what is not offered), and that view is what `evaluate()` is given.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cds_service import yaml_load
from cds_service.config import ConfigError
from cds_service.knowledge.model import Catalog, Local

if TYPE_CHECKING:
    from cds_service.knowledge import Knowledge

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "site.schema.json"
# Group shorthands for `unavailable`, built only from what the catalog records about each study.
PET_GROUP = "pet"  # every PET/CT study: each tracer-specific one and the untraced order
MODALITY_PREFIX = "modality:"  # every study of one catalog modality (modality:mri, modality:psma-pet)
FAMILY_PREFIX = "family:"  # every contrast protocol of one coverage (family:ct-cap)


class SiteConfigError(ConfigError):
    """The site file cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class RuleOverride:
    rule_id: str
    off: bool
    indicator: str | None  # "info" (downgrade only) or None
    reason: str
    approved_by: str
    approved_on: str | None = None

    @property
    def change(self) -> str:
        return "switched off" if self.off else f"shown as {self.indicator}"

    @property
    def sentence(self) -> str:
        """"switched off at this site by Dr X (CDS committee) on 2026-11-02: reason"."""
        on = f" on {self.approved_on}" if self.approved_on else ""
        return f"{self.change} at this site by {self.approved_by}{on}: {self.reason}"


@dataclass(frozen=True)
class ServiceOverride:
    quiet: bool | None = None  # None: CDS_QUIET_APPROPRIATE
    snooze_hours: float | None = None  # None: CDS_SNOOZE_HOURS


@dataclass(frozen=True)
class SiteConfig:
    file: str  # as given in CDS_SITE_CONFIG, for messages
    version: str
    site: str | None = None
    contact: tuple[str, str] | None = None  # (label, url)
    unavailable_listed: tuple[str, ...] = ()  # as written (ids and groups)
    unavailable: frozenset[str] = frozenset()  # procedure ids, groups and combinations expanded
    rules: Mapping[str, RuleOverride] = field(default_factory=dict)
    services: Mapping[str, ServiceOverride] = field(default_factory=dict)
    display_names: Mapping[str, str] = field(default_factory=dict)

    @property
    def switched_off(self) -> frozenset[str]:
        return frozenset(r for r, o in self.rules.items() if o.off)

    @property
    def downgraded(self) -> frozenset[str]:
        return frozenset(r for r, o in self.rules.items() if o.indicator == "info")

    def describe(self, knowledge: Knowledge) -> list[str]:
        """The effective site configuration, one line per setting (for `cds-service check`)."""
        procs = knowledge.catalog.procedures
        lines = [f"site configuration {self.file}: {self.site or '(no site name)'}, version {self.version}"]
        if self.contact:
            lines.append(f"  contact = {self.contact[0]} <{self.contact[1]}>")
        listed = ", ".join(self.unavailable_listed) or "(none)"
        lines.append(f"  unavailable = {listed}")
        if set(self.unavailable) - set(self.unavailable_listed):
            lines.append("    i.e. " + ", ".join(sorted(self.unavailable)))
        for rule_id, o in self.rules.items():
            lines.append(f"  rule {rule_id}: {o.sentence}")
        for service_id, s in self.services.items():
            parts = [f"quiet={str(s.quiet).lower()}"] if s.quiet is not None else []
            parts += [f"snooze_hours={s.snooze_hours:g}"] if s.snooze_hours is not None else []
            lines.append(f"  service {service_id}: {', '.join(parts)}")
        for pid, name in self.display_names.items():
            lines.append(f"  display name {pid}: {name!r} (catalog: {procs[pid].display!r})")
        return lines


def load_site(path: Path, knowledge: Knowledge, service_ids: Collection[str]) -> SiteConfig:
    """Read, schema-check and cross-check the site file; SiteConfigError names file and field."""
    file = str(path)
    try:
        data = yaml_load.safe_load(path.read_bytes())
    except OSError as exc:
        raise SiteConfigError(f"{file}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise SiteConfigError(f"{file}: invalid YAML: {exc}") from exc
    except ValueError as exc:  # a date-shaped value that is no date (`approved_on: 2026-13-01`)
        raise SiteConfigError(f"{file}: invalid date ({exc}); write dates as YYYY-MM-DD") from exc
    data = _off_keys(_dates_as_text(data))
    _schema_check(file, data)
    checker = _Checker(file, knowledge, service_ids)
    unavailable_listed = tuple(data.get("unavailable") or ())
    contact = data.get("contact")
    return SiteConfig(
        file=file,
        version=data["version"],
        site=data.get("site"),
        contact=(contact["label"], contact["url"]) if contact else None,
        unavailable_listed=unavailable_listed,
        unavailable=checker.unavailable(unavailable_listed),
        rules=checker.rules(data.get("rules") or {}),
        services=checker.services(data.get("services") or {}),
        display_names=checker.display_names(data.get("display_names") or {}),
    )


def site_view(knowledge: Knowledge, site: SiteConfig | None) -> Knowledge:
    """The knowledge base as the engine sees it at this site (the base itself is left unchanged:
    rule pages and docs show every rule, with the site's changes marked)."""
    if site is None:
        return knowledge
    off, info = site.switched_off, site.downgraded
    procedures = {
        pid: dataclasses.replace(p, display=site.display_names[pid]) if pid in site.display_names else p
        for pid, p in knowledge.catalog.procedures.items()
    }
    pitfalls = {
        pid: dataclasses.replace(p, indicator="info") if pid in info else p
        for pid, p in knowledge.pitfalls.items()
    }
    scenarios = tuple(
        dataclasses.replace(s, pitfalls=tuple(p for p in s.pitfalls if p not in off))
        for s in knowledge.scenarios
        if s.id not in off
    )
    local = Local(
        site=site.site,
        version=site.version,
        unavailable=site.unavailable,
        info_only=frozenset(s.id for s in knowledge.scenarios if s.id in info),
        contact=site.contact,
    )
    return dataclasses.replace(
        knowledge,
        catalog=dataclasses.replace(knowledge.catalog, procedures=procedures),
        scenarios=scenarios,
        pitfalls=pitfalls,
        local=local,
    )


def groups(catalog: Catalog) -> dict[str, frozenset[str]]:
    """Group shorthand -> procedure ids, from the catalog's own modality and family fields."""
    procs = catalog.procedures.values()
    out = {PET_GROUP: frozenset(p.id for p in procs if p.modality.endswith("pet"))}
    for modality in sorted({p.modality for p in procs}):
        out[MODALITY_PREFIX + modality] = frozenset(p.id for p in procs if p.modality == modality)
    for family in sorted({p.family for p in procs if p.family}):
        out[FAMILY_PREFIX + family] = frozenset(p.id for p in procs if p.family == family)
    return out


def _dates_as_text(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _dates_as_text(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_dates_as_text(v) for v in data]
    return data.isoformat() if isinstance(data, date) else data


def _off_keys(data: Any) -> Any:
    """YAML 1.1 reads the key `off` as the boolean false: `rules: {x: {off: true}}` arrives as
    {False: True}. Inside a rule's entry that key can only mean `off`."""
    rules = data.get("rules") if isinstance(data, dict) else None
    if isinstance(rules, dict):
        data["rules"] = {
            rule_id: {("off" if k is False else k): v for k, v in entry.items()}
            if isinstance(entry, dict)
            else entry
            for rule_id, entry in rules.items()
        }
    return data


def field_path(parts: Iterable[Any]) -> str:
    """["rules", "flare-phenomenon", "reason"] -> "rules.flare-phenomenon.reason";
    ["unavailable", 1] -> "unavailable[1]"."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _schema_check(file: str, data: Any) -> None:
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        message = first.message
        if first.validator == "additionalProperties" and not first.absolute_path:
            message += "; the fields are version, site, contact, unavailable, rules, services, display_names"
        if first.validator == "type" and list(first.absolute_path) == ["version"]:
            message += ' (quote it: version: "1.2")'
        raise SiteConfigError(f"{file}: {field_path(first.absolute_path)}: {message}{more}")


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Checker:
    """The checks a schema cannot make: ids against the loaded knowledge and the service list."""

    def __init__(self, file: str, knowledge: Knowledge, service_ids: Collection[str]) -> None:
        self.file, self.k, self.service_ids = file, knowledge, service_ids
        self.groups = groups(knowledge.catalog)

    def fail(self, where: Iterable[Any], message: str) -> SiteConfigError:
        return SiteConfigError(f"{self.file}: {field_path(where)}: {message}")

    def unavailable(self, listed: tuple[str, ...]) -> frozenset[str]:
        procs = self.k.catalog.procedures
        ids: set[str] = set()
        for i, entry in enumerate(listed):
            if entry in procs:
                ids.add(entry)
            elif entry in self.groups:
                ids |= self.groups[entry]
            else:
                hint = _hint(entry, [*procs, *self.groups])
                raise self.fail(
                    ["unavailable", i],
                    f"{entry!r} is not a catalog procedure{hint}"
                    if hint
                    else f"{entry!r} is not a catalog procedure (cards/procedures.yaml) or group "
                    f"({PET_GROUP}, {MODALITY_PREFIX}<modality>, {FAMILY_PREFIX}<family>)",
                )
        # A combined study can be done only if one set of its parts can: CT C/A/P is not offered
        # when every way of ordering it needs a study the site does not offer.
        for p in procs.values():
            if p.join_sets and all(any(part in ids for part in parts) for parts in p.join_sets):
                ids.add(p.id)
        return frozenset(ids)

    def rules(self, raw: Mapping[str, Any]) -> dict[str, RuleOverride]:
        out = {}
        for rule_id, o in raw.items():
            where = ["rules", rule_id]
            scenario = self.k.scenario(rule_id)
            if scenario is not None and scenario.kind == "red-flag":
                raise self.fail(
                    where,
                    f"{rule_id!r} is a red flag ({scenario.title}): red flags can never be switched off "
                    "or shown as info",
                )
            if scenario is None and rule_id not in self.k.pitfalls:
                if rule_id in self.k.texts.outcomes:
                    raise self.fail(where, f"{rule_id!r} is an engine rule, not a clinical rule or pitfall; "
                                    "it cannot be changed per site")
                known = [s.id for s in self.k.scenarios] + list(self.k.pitfalls)
                raise self.fail(where, f"{rule_id!r} is not a rule or pitfall id{_hint(rule_id, known)}")
            off, indicator = bool(o.get("off")), o.get("indicator")
            if off == (indicator is not None):
                raise self.fail(where, "give exactly one change: `off: true` or `indicator: info`")
            approved_on = o.get("approved_on")
            if approved_on is not None:
                try:
                    date.fromisoformat(approved_on)
                except ValueError:
                    raise self.fail([*where, "approved_on"], f"{approved_on!r} is not a date") from None
            out[rule_id] = RuleOverride(rule_id, off, indicator, o["reason"], o["approved_by"], approved_on)
        return out

    def services(self, raw: Mapping[str, Any]) -> dict[str, ServiceOverride]:
        out = {}
        for service_id, s in raw.items():
            if service_id not in self.service_ids:
                hint = _hint(service_id, self.service_ids)
                hint = hint or f"; the services are {', '.join(self.service_ids)}"
                raise self.fail(["services", service_id], f"{service_id!r} is not a service id{hint}")
            hours = s.get("snooze_hours")
            out[service_id] = ServiceOverride(s.get("quiet"), None if hours is None else float(hours))
        return out

    def display_names(self, raw: Mapping[str, str]) -> dict[str, str]:
        procs = self.k.catalog.procedures
        for pid in raw:
            if pid not in procs:
                hint = _hint(pid, procs)
                raise self.fail(["display_names", pid], f"{pid!r} is not a catalog procedure{hint}")
        return dict(raw)
