"""The knowledge cache (issue 11, start-up): shared in the process, kept on disk, never stale."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cds_service import knowledge as kb
from cds_service.config import Settings
from cds_service.knowledge import DEFAULT_CARDS_DIR, KnowledgeError, cache, load_knowledge


@pytest.fixture
def cards(tmp_path: Path) -> Path:
    root = tmp_path / "cards"
    shutil.copytree(DEFAULT_CARDS_DIR, root)
    return root


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    path = tmp_path / "cache"
    path.mkdir(mode=0o700)
    return path


def _no_full_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(root: Path) -> None:
        raise AssertionError("loaded in full")

    monkeypatch.setattr(kb, "_load", fail)


def test_one_object_per_content_in_the_process(cards, monkeypatch):
    first = load_knowledge(cards)
    _no_full_load(monkeypatch)
    assert load_knowledge(cards) is first


def test_a_changed_byte_is_a_new_full_load(cards):
    first = load_knowledge(cards)
    (cards / "VERSION").write_text(first.version + "-edited\n")
    second = load_knowledge(cards)
    assert second is not first and second.version == first.version + "-edited"


def test_disk_cache_serves_the_next_start_and_never_a_stale_base(cards, cache_dir, monkeypatch):
    first = load_knowledge(cards, cache_dir)
    assert len(list(cache_dir.glob("knowledge-*.pickle"))) == 1
    cache.clear_memo()  # a new process
    with monkeypatch.context() as m:
        _no_full_load(m)
        again = load_knowledge(cards, cache_dir)
    assert again == first and again is not first
    cache.clear_memo()
    scenario = sorted((cards / "scenarios").glob("*.yaml"))[0]
    scenario.write_text(scenario.read_text() + "\n# edited\n")
    edited = load_knowledge(cards, cache_dir)  # a new key: loaded and checked in full
    assert edited.digest != first.digest
    assert len(list(cache_dir.glob("knowledge-*.pickle"))) == 2


def test_a_changed_loader_is_a_new_key(cards, monkeypatch, tmp_path):
    code = tmp_path / "code"
    shutil.copytree(Path(cache.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "_CODE_DIR", code)
    before = cache.content_key(cards)
    (code / "predicates.py").write_text((code / "predicates.py").read_text() + "\n# changed\n")
    assert cache.content_key(cards) != before


def test_an_invalid_base_is_refused_and_not_cached(cards, cache_dir):
    (cards / "procedures.yaml").write_text("procedures: [\n")
    with pytest.raises(KnowledgeError):
        load_knowledge(cards, cache_dir)
    assert not list(cache_dir.glob("knowledge-*"))


def test_a_directory_others_can_write_is_neither_read_nor_written(cards, cache_dir):
    os.chmod(cache_dir, 0o777)
    load_knowledge(cards, cache_dir)
    assert not list(cache_dir.glob("knowledge-*"))


def test_a_read_only_cache_directory_still_starts(cards, cache_dir):
    os.chmod(cache_dir, 0o500)
    try:
        assert load_knowledge(cards, cache_dir).version
    finally:
        os.chmod(cache_dir, 0o700)


def test_a_torn_cache_file_is_ignored(cards, cache_dir):
    first = load_knowledge(cards, cache_dir)
    (pickled,) = cache_dir.glob("knowledge-*.pickle")
    pickled.write_bytes(pickled.read_bytes()[:100])
    cache.clear_memo()
    assert load_knowledge(cards, cache_dir) == first


def test_cache_dir_setting():
    assert Settings.from_env({"XDG_CACHE_HOME": "/x"}).cache_dir == Path("/x/cds-service")
    assert Settings.from_env({"CDS_CACHE_DIR": "/srv/cache"}).cache_dir == Path("/srv/cache")
    assert Settings.from_env({"CDS_CACHE_DIR": "off"}).cache_dir is None
    assert Settings().cache_dir is None  # built in code (tests): nothing written to disk
