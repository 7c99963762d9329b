"""The loaded, checked knowledge base, kept between loads (issue 11, start-up).

Loading means parsing every YAML file under cards/, checking each against its JSON schema and
cross-checking ids: about a second at every start, and again for every app a test builds. The
result depends only on the bytes of those files and on the loader's code, so it is kept under a
key that hashes exactly that: every file under the cards directory (name and bytes), every
module of cds_service/knowledge (the loader and the classes it builds), and the Python version.
Change one byte of either and the key changes: a stale entry can never be used, it is simply
never asked for again.

Two levels: in this process (a dict: tests and tools that build many apps share one object; the
Knowledge is frozen) and on disk (a pickle per key in the cache directory, written atomically, so
the next start of the service skips the checks). The disk level is used only in a directory owned
by this user and writable by nobody else (a pickle is code: whoever can write it could run code
as the service), and never fails a start: an unreadable, read-only or unsafe directory means a
normal, full load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 1  # bump when what is pickled changes shape in a way the code hashes would not show
_CODE_DIR = Path(__file__).resolve().parent
_MEMO_SIZE = 8
_memo: dict[str, Any] = {}


def content_key(cards_dir: Path) -> str:
    """sha256 over the loader's code and schemas and every file under `cards_dir` (names and bytes)."""
    h = hashlib.sha256(f"{FORMAT}|{sys.version_info[:3]}|{pickle.HIGHEST_PROTOCOL}".encode())
    for label, root in (("code", _CODE_DIR), ("cards", cards_dir)):
        files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in files:
            if label == "code" and path.suffix not in {".py", ".json"}:  # loader code and its schemas
                continue
            data = path.read_bytes()
            h.update(f"{label}/{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()


def _safe_dir(path: Path) -> bool:
    """Ours alone: owned by this user, not writable by group or others."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _read(path: Path) -> Any:
    if not path.is_file() or not _safe_dir(path.parent) or not _safe_dir(path):
        return None
    try:
        with path.open("rb") as fh:
            return pickle.load(fh)  # noqa: S301 - our own file, in a directory only we can write
    except Exception as exc:  # a torn or foreign file: load normally and overwrite it
        log.info("knowledge cache: ignoring %s (%s)", path.name, type(exc).__name__)
        return None


def _write(path: Path, value: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not _safe_dir(path.parent):
            log.info("knowledge cache: %s is not private to this user; not written", path.parent)
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".knowledge-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)  # atomic: a concurrent start reads the old file or the new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (OSError, pickle.PicklingError) as exc:  # read-only or full: the next start loads again
        log.info("knowledge cache: not written (%s)", type(exc).__name__)


def cached(cards_dir: Path, cache_dir: Path | None, load: Callable[[], Any], kind: type) -> Any:
    """`load()`'s result for these cards and this code: from memory, from disk, or loaded now."""
    key = content_key(cards_dir)
    path = cache_dir / f"knowledge-{key[:32]}.pickle" if cache_dir is not None else None
    found = _memo.get(key)
    if found is not None:
        if path is not None and not path.exists():
            _write(path, found)
        return found
    found = _read(path) if path is not None else None
    if not isinstance(found, kind):
        found = load()  # raises KnowledgeError on a bad file: never cached
        if path is not None:
            _write(path, found)
    if len(_memo) >= _MEMO_SIZE:
        _memo.pop(next(iter(_memo)))
    _memo[key] = found
    return found


def clear_memo() -> None:
    _memo.clear()
