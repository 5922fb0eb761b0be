"""The registry's storage: one root (a local directory or an fsspec URL), checked names, and
whole-object writes that are atomic.

Every path below the root is built from names that match ``NAME_RE`` (no ``/``, no ``..``,
no leading dot), so nothing the Registry reads or writes can leave the root. A write is one
atomic step: on a local filesystem a temporary file ``.tmp-<name>-<random>`` in the same
folder, fsynced, then ``os.replace``; elsewhere one ``pipe_file`` (a single PUT on object
stores and the memory filesystem). Temporary files are never listed and ``gc`` removes them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from models.registry.serial import RegistryError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # whole name: fullmatch
TMP_PREFIX = ".tmp-"


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is a safe single path component, else RegistryError."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise RegistryError(f"invalid {what} {name!r}: letters, digits, '_', '.', '-' only "
                            "(no '..', at most 128, starting with a letter or digit)")
    return name


class Store:
    """Bytes and JSON under ``root``; paths are tuples of names, checked on every call."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.url = os.fspath(root)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/") or "/"
        self.local = isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        """The full path of ``root/parts...`` (every part a checked name)."""
        for part in parts:
            if not part.startswith(TMP_PREFIX):  # internal temporaries, made here only
                check_name(part)
        return "/".join((self.root.rstrip("/"), *parts))

    def read(self, *parts: str) -> bytes:
        """The bytes of a file; FileNotFoundError if it is absent."""
        path = self.path(*parts)
        if self.local:
            with open(path, "rb") as f:
                return f.read()
        data: bytes = self.fs.cat_file(path)
        return data

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read(*parts))

    def exists(self, *parts: str) -> bool:
        path = self.path(*parts)
        return os.path.exists(path) if self.local else bool(self.fs.exists(path))

    def write(self, parts: tuple[str, ...], data: bytes) -> None:
        """Replaces ``root/parts`` with ``data`` in one atomic step (see the module doc)."""
        path = self.path(*parts)
        if not self.local:
            parent = path.rsplit("/", 1)[0]
            self.fs.makedirs(parent, exist_ok=True)
            self.fs.pipe_file(path, data)
            return
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f"{TMP_PREFIX}{parts[-1]}-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def write_json(self, parts: tuple[str, ...], data: Any) -> None:
        self.write(parts, json.dumps(data, indent=1, sort_keys=True).encode())

    def sync_dir(self, *parts: str) -> None:
        """Makes the names written in a local folder durable before the next write (a
        manifest must not outlive, after a power cut, the files it lists); no-op elsewhere."""
        if not self.local:
            return
        fd = os.open(self.path(*parts), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def names(self, *parts: str, temporaries: bool = False) -> list[str]:
        """Sorted entry names of a folder ([] if absent): checked names only, plus the
        temporaries when asked; anything else (not the registry's) is skipped."""
        path = self.path(*parts)
        try:
            if self.local:
                found = os.listdir(path)
            else:
                found = [p.rstrip("/").rsplit("/", 1)[-1]
                         for p in self.fs.ls(path, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for name in found:
            if name.startswith(TMP_PREFIX):
                if temporaries:
                    out.append(name)
            elif NAME_RE.fullmatch(name) and ".." not in name:
                out.append(name)
        return sorted(out)

    def age_s(self, *parts: str) -> float:
        """Seconds since the last write to a file, or into a folder (its newest file); inf
        where the filesystem does not say."""
        path = self.path(*parts)
        if self.local:
            try:
                stamps = [os.stat(path).st_mtime]
                if os.path.isdir(path):
                    stamps += [e.stat().st_mtime for e in os.scandir(path)]
            except FileNotFoundError:
                return math.inf
            return time.time() - max(stamps)
        newest = -math.inf
        for file in self.fs.find(path):
            try:
                newest = max(newest, self.fs.modified(file).timestamp())
            except (NotImplementedError, FileNotFoundError, AttributeError):
                continue
        return time.time() - newest

    def remove(self, *parts: str) -> None:
        """Removes a file or a whole folder (absent: nothing)."""
        path = self.path(*parts)
        if self.local:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)
