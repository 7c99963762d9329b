"""Loads the knowledge base under `cards/` and refuses invalid files.

Placeholder until the knowledge-engine issue lands; the contract the protocol layer relies on is
`load_knowledge(cards_dir) -> Knowledge` (raising `KnowledgeError` on an invalid file) and
`Knowledge.version`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_CARDS_DIR = Path(__file__).resolve().parents[2] / "cards"


class KnowledgeError(ValueError):
    """A file under cards/ failed its schema or cross-reference checks."""


@dataclass(frozen=True)
class Knowledge:
    version: str


def load_knowledge(cards_dir: Path | None = None) -> Knowledge:
    return Knowledge(version="0")
