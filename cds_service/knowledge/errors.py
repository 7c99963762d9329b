"""The one error the knowledge loader raises (its own module so value-set code can import it freely)."""

from __future__ import annotations


class KnowledgeError(ValueError):
    """A file under cards/ failed its schema or cross-reference checks; the message names file and path."""
