"""YAML parsing with libyaml's C loader where PyYAML was built with it (issue 11, start-up).

The pure-Python SafeLoader spent most of the knowledge base's load time; CSafeLoader builds the
same plain data (mappings, lists, strings, numbers, booleans, null) about ten times faster and is
just as safe (no arbitrary objects). Without libyaml the pure-Python loader is used.
"""

from __future__ import annotations

from typing import IO, Any

import yaml

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

C_LOADER = _Loader.__name__ == "CSafeLoader"


def safe_load(stream: str | bytes | IO[Any]) -> Any:
    return yaml.load(stream, Loader=_Loader)  # noqa: S506 - a safe loader, C or Python
