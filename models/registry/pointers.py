"""Named pointers of a model family (``live``, ``candidate``, A/B variants), their history,
and the record of rejected candidates; the Registry's half that moves, not stores, versions.

A pointer is one JSON object ``pointers/<family>/<name>.json``::

    {"family", "pointer", "current": vid, "history": [{"version", "at", "reason",
     "action": "promote" | "rollback", "from"}]}

rewritten whole at every change in one atomic write, so a reader sees the pointer before or
after a change, never between; it only ever names a complete version (checked before the
write). The history holds every version the pointer has held. It is a stack of promotions:
``promote`` pushes, ``rollback`` pops, so a rollback goes back exactly one promotion and a
second rollback one more.

Single writer: two processes moving the same pointer at once can lose one of the changes
(the last write wins); run promotions from one place (the update loop, or the CLI by hand).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from models.registry.serial import RegistryError
from models.registry.store import Store, check_name

POINTERS = "pointers"
REJECTIONS = "rejections"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def promotions(history: list[dict[str, Any]]) -> list[str]:
    """The stack of promoted versions that a history leaves (its last entry: the current)."""
    stack: list[str] = []
    for entry in history:
        if entry["action"] == "rollback":
            stack.pop()
        else:
            stack.append(entry["version"])
    return stack


class PointerOps:
    """Pointers, history and rejections over ``self.store``; mixed into ``Registry``."""

    store: Store

    def manifest(self, vid: str) -> dict[str, Any]:  # the Registry's
        raise NotImplementedError

    def _pointer_doc(self, family: str, name: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = self.store.read_json(
                POINTERS, check_name(family, "family"), f"{check_name(name, 'pointer')}.json")
        except FileNotFoundError:
            return None
        return doc

    def _write_pointer(self, family: str, name: str, doc: dict[str, Any]) -> None:
        self.store.write_json((POINTERS, family, f"{name}.json"), doc)

    def pointer(self, family: str, name: str = "live") -> str | None:
        """The version ``family``'s pointer ``name`` holds, None if it was never set."""
        doc = self._pointer_doc(family, name)
        return None if doc is None else str(doc["current"])

    def pointers(self, family: str) -> dict[str, str]:
        """Every pointer of ``family``: {name: version}."""
        out = {}
        for file in self.store.names(POINTERS, check_name(family, "family")):
            name = file.removesuffix(".json")
            if file.endswith(".json") and (vid := self.pointer(family, name)) is not None:
                out[name] = vid
        return out

    def families(self) -> list[str]:
        """The families that have at least one pointer."""
        return self.store.names(POINTERS)

    def history(self, family: str, pointer: str = "live") -> list[dict[str, Any]]:
        """Every change of the pointer, oldest first: [{version, at, reason, action, ...}]."""
        doc = self._pointer_doc(family, pointer)
        return [] if doc is None else list(doc["history"])

    def set_pointer(self, family: str, name: str, vid: str, *, reason: str = "") -> None:
        """Points ``family``'s ``name`` at the complete version ``vid`` (one atomic write);
        the change goes into the history. Setting the version it already holds: nothing."""
        check_name(family, "family")
        check_name(name, "pointer")
        manifest = self.manifest(vid)  # VersionNotFound unless complete
        if manifest["family"] != family:
            raise RegistryError(f"{vid} is a {manifest['family']!r} version, not {family!r}")
        doc = self._pointer_doc(family, name) or {
            "family": family, "pointer": name, "current": None, "history": []}
        if doc["current"] == vid:
            return
        doc["history"].append({"version": vid, "at": now().isoformat(), "reason": reason,
                               "action": "promote", "from": doc["current"]})
        doc["current"] = vid
        self._write_pointer(family, name, doc)

    def promote(self, family: str, vid: str, pointer: str = "live", *, reason: str = "") -> None:
        """``set_pointer``: makes ``vid`` the family's ``pointer`` (``live`` by default)."""
        self.set_pointer(family, pointer, vid, reason=reason)

    def rollback(self, family: str, pointer: str = "live", *, reason: str = "") -> str:
        """Undoes the pointer's last promotion still in force; returns the version it points to
        now. RegistryError if the pointer was never set or has no earlier promotion left."""
        doc = self._pointer_doc(family, pointer)
        if doc is None:
            raise RegistryError(f"{family}/{pointer} was never set")
        stack = promotions(doc["history"])
        if len(stack) < 2:
            raise RegistryError(f"{family}/{pointer}: no earlier version to roll back to "
                                f"(holds {doc['current']})")
        back = stack[-2]
        self.manifest(back)  # still complete (a version is never removed)
        doc["history"].append({"version": back, "at": now().isoformat(), "reason": reason,
                               "action": "rollback", "from": doc["current"]})
        doc["current"] = back
        self._write_pointer(family, pointer, doc)
        return back

    def record_rejection(self, family: str, *, candidate_manifest: dict[str, Any], reason: str,
                         metrics: dict[str, Any]) -> None:
        """Keeps why a candidate was not promoted: ``rejections/<family>/<time>-<id>.json``
        (one file each, written atomically, so records never interleave)."""
        at = now()
        name = f"{at.strftime('%Y%m%dT%H%M%S.%f')}-{uuid.uuid4().hex[:6]}.json"
        self.store.write_json((REJECTIONS, check_name(family, "family"), name), {
            "family": family, "at": at.isoformat(), "reason": reason, "metrics": metrics,
            "candidate": candidate_manifest})

    def rejections(self, family: str) -> list[dict[str, Any]]:
        """The family's rejected candidates, oldest first."""
        folder = (REJECTIONS, check_name(family, "family"))
        return [self.store.read_json(*folder, name) for name in self.store.names(*folder)
                if name.endswith(".json")]
