"""The registry survives its publisher dying anywhere: SIGKILL at random points, and a crash
injected before each of the writes of a publish, a promotion and a rollback."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.bank import EmbeddingBank
from models.registry import Registry, RegistryError, VersionNotFound
from models.registry.pointers import promotions
from models.registry.store import Store
from models.train import build_model

from .registry_publisher import VOCAB, publish_loop

TRIALS = 24


def leftovers(reg: Registry) -> set[str]:
    """Paths (under the root) of what a complete registry does not hold: temporary files, and
    bank or version folders without a manifest. Found from the files, not from ``gc``."""
    store = reg.store
    out = set()
    for path in store.fs.find(store.root, withdirs=True):
        parts = path[len(store.root):].strip("/").split("/")
        if parts[0] in ("banks", "versions") and len(parts) > 1 \
                and not store.exists(*parts[:2], "MANIFEST.json"):
            out.add("/".join(parts[:2]))
            continue
        if any(p.startswith(".tmp-") for p in parts):
            out.add("/".join(parts))
    return out


def assert_sound(reg: Registry, load_all: bool = False) -> None:
    """Everything listed is complete and verifies; every pointer is on a complete version of
    its family and agrees with its history."""
    assert reg.check() == []
    versions = {m["version"]: m for m in reg.versions()}
    for family in reg.families():
        for name, vid in reg.pointers(family).items():
            assert versions[vid]["family"] == family
            history = reg.history(family, name)
            assert promotions(history)[-1] == vid == history[-1]["version"]
            assert all(e["version"] in versions for e in history)
            reg.load_pointer(family, name)
    for vid in versions if load_all else list(versions)[-3:]:
        assert reg.load(vid).registry_version == vid


def _publisher(root: str, seed: int) -> None:
    publish_loop(root, seed)


@pytest.mark.timeout(120)
def test_a_publisher_killed_at_random_points_leaves_a_sound_registry(tmp_path: Path) -> None:
    rng = random.Random(27)
    ctx = multiprocessing.get_context("fork")  # the imports paid once: each trial forks
    root = tmp_path / "registry"
    orphaned, versions_seen = 0, 0
    for trial in range(TRIALS):
        url = str(root) if trial % 2 else f"file://{root}"
        proc = ctx.Process(target=_publisher, args=(url, trial), daemon=True)
        proc.start()
        time.sleep(rng.uniform(0.02, 0.2))
        assert proc.is_alive() and proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL

        reg = Registry(url)
        assert_sound(reg)
        before = [m["version"] for m in reg.versions()]
        found = leftovers(reg)
        orphaned += bool(found)
        assert set(reg.gc()) == found
        assert leftovers(reg) == set() and reg.gc() == []
        assert [m["version"] for m in reg.versions()] == before
        versions_seen = len(before)
    assert orphaned >= TRIALS // 6, f"only {orphaned} kills landed inside a write"
    assert versions_seen > TRIALS
    assert_sound(Registry(root), load_all=True)


class _Crash(BaseException):
    """The process dies here (a BaseException: nothing catches it on the way up)."""


@pytest.fixture(params=["memory", "local"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "local":
        yield str(tmp_path / "registry")
        return
    url = f"memory://kill-{uuid.uuid4().hex[:8]}"
    yield url
    Registry(url).store.remove()


def test_a_crash_before_any_write_leaves_the_last_state(root: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Publish (new bank) + promote + candidate + rollback: crash before write n, for every n."""
    bank = EmbeddingBank(VOCAB, dim=4)
    first = build_model("din", bank)
    reg = Registry(root)
    v1 = reg.publish(first, "din", parent=None, sample_range={}, metrics={"auc": 0.6})
    reg.promote("din", v1)

    def sequence(reg: Registry) -> None:
        model = build_model("din", EmbeddingBank(VOCAB, dim=4))
        vid = reg.publish(model, "din", parent=v1, sample_range={}, metrics={"auc": 0.7})
        reg.promote("din", vid)
        reg.set_pointer("din", "candidate", vid)
        reg.rollback("din")

    writes = []
    real_write = Store.write

    def counting(self: Store, parts: tuple[str, ...], data: bytes) -> None:
        writes.append(parts)
        real_write(self, parts, data)

    monkeypatch.setattr(Store, "write", counting)
    sequence(reg)  # counts the writes, and leaves live on v1
    n_writes = len(writes)
    assert n_writes == 7  # bank file + manifest, top + manifest, 3 pointer writes

    for n in range(n_writes):
        calls = iter(range(n_writes))

        def crashing(self: Store, parts: tuple[str, ...], data: bytes, n: int = n,
                     calls: Iterator[int] = calls) -> None:
            if next(calls) == n:
                raise _Crash
            real_write(self, parts, data)

        before = [m["version"] for m in reg.versions()]
        monkeypatch.setattr(Store, "write", crashing)
        with pytest.raises(_Crash):
            sequence(Registry(root))
        monkeypatch.setattr(Store, "write", real_write)
        reg = Registry(root)
        assert_sound(reg)
        after = [m["version"] for m in reg.versions()]
        # writes 0-3: bank, its manifest, top, its manifest; 4: promote; 5: candidate
        assert after[:len(before)] == before and len(after) == len(before) + (n > 3)
        assert reg.pointer("din") == (after[-1] if n > 4 else v1)
        reg.gc()
        assert leftovers(reg) == set()
        assert_sound(reg)


def test_gc_keeps_complete_versions_and_removes_orphans(root: str) -> None:
    reg = Registry(root)
    vid = reg.publish(build_model("base", EmbeddingBank(VOCAB, dim=4)), "base", parent=None,
                      sample_range={}, metrics={})
    store = reg.store
    store.write(("versions", "base-orphan", "top.safetensors"), b"half")
    store.write(("banks", "0123456789abcdef", "bank.safetensors"), b"half")
    store.write(("pointers", "base", ".tmp-live.json-1234"), b"{")
    with pytest.raises(VersionNotFound):
        reg.load("base-orphan")
    assert [m["version"] for m in reg.versions()] == [vid]
    assert reg.gc(min_age_s=3600) == []  # too fresh: maybe a publish in progress
    assert sorted(reg.gc()) == ["banks/0123456789abcdef", "pointers/base/.tmp-live.json-1234",
                                "versions/base-orphan"]
    assert reg.load(vid).registry_version == vid and reg.gc() == []


def test_a_folder_removed_under_a_publisher_is_not_published(root: str,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """A gc run during a publish (against the rule) takes the half-written folder: the
    publisher notices before writing the manifest, so no manifest lists missing files."""
    reg = Registry(root)
    real_sync = Store.sync_dir

    def gc_meanwhile(self: Store, *parts: str) -> None:
        real_sync(self, *parts)
        reg.gc()

    monkeypatch.setattr(Store, "sync_dir", gc_meanwhile)
    with pytest.raises(RegistryError, match="removed while being published"):
        reg.publish(build_model("din", EmbeddingBank(VOCAB, dim=4)), "din", parent=None,
                    sample_range={}, metrics={})
    monkeypatch.setattr(Store, "sync_dir", real_sync)
    assert reg.versions() == [] and reg.banks() == [] and reg.check() == []
