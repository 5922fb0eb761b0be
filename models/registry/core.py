"""The model registry: bank versions and top-net versions under one root, each with a manifest;
publishing that is atomic and verified; loading that checks every byte.

Layout (``root`` a local folder or an fsspec URL: ``s3://``, ``gs://``, ``file://``,
``memory://``)::

    banks/<bank_id>/bank.safetensors     bank_id = the bank's content hash (16 hex digits)
    banks/<bank_id>/MANIFEST.json        dim, tables, created_at, files {name: sha256}
    versions/<vid>/top.safetensors       vid = <family>-<UTC time>-<random>, sortable by time
    versions/<vid>/MANIFEST.json         parent, bank_version, family, arch, config,
                                         sample_range, metrics, created_at, code_version,
                                         extra, top_version, files {name: sha256}
    pointers/<family>/<name>.json        see models.registry.pointers
    rejections/<family>/<time>-<id>.json

A version or bank folder exists for readers only once its MANIFEST.json is there, and the
manifest is written last, after every file it lists (each written atomically, the folder
synced): a publisher killed at any point leaves at most a folder without a manifest (an
orphan, invisible, removed by ``gc``) and temporary files. Loading re-hashes every file
against the manifest and the bank's tensors against its id, and reads tensors with
safetensors only (no pickle).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from models.bank import EmbeddingBank
from models.ranker import Ranker
from models.registry.pointers import POINTERS, REJECTIONS, PointerOps, now
from models.registry.serial import (
    IntegrityError,
    RegistryError,
    VersionNotFound,
    bank_from_bytes,
    bank_to_bytes,
    model_from_bytes,
    sha256,
    top_to_bytes,
)
from models.registry.store import TMP_PREFIX, Store, check_name

BANKS = "banks"
VERSIONS = "versions"
MANIFEST = "MANIFEST.json"
BANK_FILE = "bank.safetensors"
TOP_FILE = "top.safetensors"
SCHEMA = 1


@functools.cache
def detect_code_version() -> str | None:
    """``git describe --always --dirty`` of the checkout this code runs from, else the
    installed package's version, else None."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=here,
                             capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return f"recstream=={version('recstream')}"
    except Exception:
        return None


class Registry(PointerOps):
    """Versions of banks and top nets, and the pointers that pick them (module doc)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.store = Store(root)

    def __repr__(self) -> str:
        return f"Registry({self.store.url!r})"

    # --- publishing ---------------------------------------------------------------------

    def _publish_folder(self, kind: str, name: str, files: dict[str, bytes],
                        manifest: dict[str, Any]) -> None:
        """Writes the files, then (the folder synced) the manifest with their hashes."""
        for fname, data in files.items():
            self.store.write((kind, name, fname), data)
        self.store.sync_dir(kind, name)
        if not all(self.store.exists(kind, name, fname) for fname in files):
            raise RegistryError(f"{kind}/{name} was removed while being published (a gc "
                                "while a publisher runs?): nothing published")
        manifest["files"] = {fname: sha256(data) for fname, data in files.items()}
        self.store.write_json((kind, name, MANIFEST), manifest)

    def publish_bank(self, bank: EmbeddingBank) -> str:
        """Publishes the bank unless a complete bank of its content hash exists; sets and
        returns ``bank.version`` (the hash)."""
        bank_id = bank.content_hash()
        if not self.store.exists(BANKS, bank_id, MANIFEST):  # else nothing serialized
            data, meta = bank_to_bytes(bank, bank_id)
            self._publish_folder(BANKS, bank_id, {BANK_FILE: data}, {
                "schema": SCHEMA, "kind": "bank", **meta,
                "created_at": now().isoformat(), "code_version": detect_code_version()})
        bank.version = bank_id
        return bank_id

    def _new_vid(self, family: str) -> str:
        while True:
            vid = f"{family}-{now().strftime('%Y%m%dT%H%M%S.%f')[:-3]}-{uuid.uuid4().hex[:6]}"
            if len(vid) > 128:
                raise RegistryError(f"family name {family!r} too long for a version id")
            if not self.store.names(VERSIONS, vid, temporaries=True):
                return vid

    def publish(self, model: Ranker, family: str, *, parent: str | None,
                sample_range: dict[str, Any], metrics: dict[str, Any],
                code_version: str | None = None, extra: dict[str, Any] | None = None) -> str:
        """Publishes the model's bank (if new) then its top net as a new version of
        ``family``; returns the version id. ``parent``: the version it was trained from
        (must exist); ``sample_range``: the samples it saw (topic partitions and offsets, or a
        time window); ``metrics``: on its evaluation window. Sets ``model.top_version``,
        ``model.bank.version`` and ``model.registry_version``."""
        check_name(family, "family")
        if parent is not None:
            self.manifest(parent)
        manifest: dict[str, Any] = {
            "schema": SCHEMA, "kind": "top", "family": family, "parent": parent,
            "sample_range": sample_range, "metrics": metrics, "extra": extra or {},
            "code_version": code_version if code_version is not None
            else detect_code_version()}
        try:
            json.dumps(manifest)  # refused before anything is written
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"manifest of {family!r} is not JSON: {exc}") from exc
        bank_id = self.publish_bank(model.bank)
        data, meta = top_to_bytes(model)
        vid = self._new_vid(family)
        manifest.update(meta, version=vid, bank_version=bank_id,
                        created_at=now().isoformat())
        self._publish_folder(VERSIONS, vid, {TOP_FILE: data}, manifest)
        model.top_version = meta["top_version"]
        model.registry_version = vid  # type: ignore[assignment]
        return vid

    # --- reading ------------------------------------------------------------------------

    def _manifest(self, kind: str, name: str) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = self.store.read_json(kind, check_name(name, "version"),
                                                       MANIFEST)
        except FileNotFoundError:
            what = "bank" if kind == BANKS else "version"
            raise VersionNotFound(f"no complete {what} {name!r} in {self.store.url}") from None
        return doc

    def manifest(self, vid: str) -> dict[str, Any]:
        """The manifest of the complete version ``vid``; VersionNotFound otherwise."""
        return self._manifest(VERSIONS, vid)

    def bank_manifest(self, bank_id: str) -> dict[str, Any]:
        """The manifest of the complete bank ``bank_id``; VersionNotFound otherwise."""
        return self._manifest(BANKS, bank_id)

    def versions(self, family: str | None = None) -> list[dict[str, Any]]:
        """Manifests of the complete versions (of ``family``, or all), oldest first."""
        out = []
        for vid in self.store.names(VERSIONS):
            try:
                m = self.manifest(vid)
            except VersionNotFound:
                continue  # an orphan: no manifest yet, or never
            if family is None or m["family"] == family:
                out.append(m)
        return sorted(out, key=lambda m: (m["created_at"], m["version"]))

    def banks(self) -> list[dict[str, Any]]:
        """Manifests of the complete banks, oldest first."""
        out = []
        for bank_id in self.store.names(BANKS):
            try:
                out.append(self.bank_manifest(bank_id))
            except VersionNotFound:
                continue
        return sorted(out, key=lambda m: (m["created_at"], m["version"]))

    def _verified(self, kind: str, name: str, manifest: dict[str, Any], fname: str) -> bytes:
        """The bytes of a listed file, refused unless their sha256 is the recorded one."""
        want = manifest.get("files", {}).get(fname)
        if want is None:
            raise IntegrityError(f"{kind}/{name}: {fname} is not in its manifest")
        try:
            data = self.store.read(kind, name, fname)
        except FileNotFoundError:
            raise IntegrityError(f"{kind}/{name}: {fname} is missing") from None
        if sha256(data) != want:
            raise IntegrityError(f"{kind}/{name}/{fname}: sha256 {sha256(data)[:12]}... "
                                 f"does not match the manifest's {want[:12]}...")
        return data

    def load_bank(self, bank_id: str, device: str = "cpu", frozen: bool = False
                  ) -> EmbeddingBank:
        """The bank ``bank_id``, its file and tensors checked; ``frozen`` for incremental."""
        m = self.bank_manifest(bank_id)
        data = self._verified(BANKS, bank_id, m, BANK_FILE)
        return bank_from_bytes(data, m, device, frozen, where=f"{BANKS}/{bank_id}")

    def load(self, vid: str, device: str = "cpu", frozen_bank: bool = False,
             bank: EmbeddingBank | None = None) -> Ranker:
        """The version ``vid`` in eval mode on ``device``, every file checked against its
        manifest; ``bank``: an already loaded bank to reuse (must be the version's)."""
        m = self.manifest(vid)
        if bank is None:
            bank = self.load_bank(m["bank_version"], device, frozen=frozen_bank)
        elif bank.version != m["bank_version"]:
            raise RegistryError(f"{vid} needs bank {m['bank_version']}, got {bank.version}")
        model = model_from_bytes(self._verified(VERSIONS, vid, m, TOP_FILE), m, bank, device)
        model.registry_version = vid  # type: ignore[assignment]
        return model

    def load_pointer(self, family: str, name: str = "live", **kw: Any) -> Ranker:
        """``load`` of the version the pointer holds; RegistryError if it was never set."""
        vid = self.pointer(family, name)
        if vid is None:
            raise RegistryError(f"{family}/{name} was never set")
        return self.load(vid, **kw)

    # --- housekeeping -------------------------------------------------------------------

    def gc(self, min_age_s: float = 0.0) -> list[str]:
        """Removes orphans: bank and version folders without a manifest, and temporary
        files; returns their paths under the root. Never a complete bank or version.
        ``min_age_s``: only what was last written that long ago, for a gc while a publisher
        may be running (a publish in progress looks like an orphan)."""
        removed = []

        def drop(*parts: str) -> None:
            if min_age_s <= 0 or self.store.age_s(*parts) >= min_age_s:
                self.store.remove(*parts)
                removed.append("/".join(parts))

        for kind in (BANKS, VERSIONS):
            for name in self.store.names(kind, temporaries=True):
                if name.startswith(TMP_PREFIX) or not self.store.exists(kind, name, MANIFEST):
                    drop(kind, name)
                    continue
                for tmp in self.store.names(kind, name, temporaries=True):
                    if tmp.startswith(TMP_PREFIX):
                        drop(kind, name, tmp)
        for kind in (POINTERS, REJECTIONS):
            for family in self.store.names(kind):
                for tmp in self.store.names(kind, family, temporaries=True):
                    if tmp.startswith(TMP_PREFIX):
                        drop(kind, family, tmp)
        return removed

    def check(self) -> list[str]:
        """Problems found by reading everything (empty: all sound): every complete bank and
        version re-hashed, every pointer on a complete version of its family."""
        problems = []
        for m in self.banks():
            try:
                self._verified(BANKS, m["version"], m, BANK_FILE)
            except RegistryError as exc:
                problems.append(str(exc))
        for m in self.versions():
            try:
                self._verified(VERSIONS, m["version"], m, TOP_FILE)
                self.bank_manifest(m["bank_version"])
            except RegistryError as exc:
                problems.append(str(exc))
        for family in self.families():
            for name, vid in self.pointers(family).items():
                try:
                    if self.manifest(vid)["family"] != family:
                        problems.append(f"{family}/{name} holds a version of another family")
                except VersionNotFound as exc:
                    problems.append(f"{family}/{name}: {exc}")
        return problems
