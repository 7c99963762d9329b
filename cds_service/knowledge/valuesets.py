"""Value sets under cards/valuesets/: (system, code) -> concept ids.

Placeholder until the facts stage lands; contract: `load_valuesets(cards_dir) -> ValueSets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ValueSets:
    pass


def load_valuesets(cards_dir: Path) -> ValueSets:
    return ValueSets()
