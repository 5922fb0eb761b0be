"""The live experiment of the serving app: weights, salt and shadow that change without a
restart, and the record of every change.

Run: ``ExperimentStore(path).set({"weights": {"a": 0.5, "b": 0.5}}, reason="ramp up")``
(``recstream ab set a=0.5 b=0.5``); the ingress replicas apply it within the watcher's
poll (:mod:`serve.watch`). ``read()`` gives the current experiment and ``history()`` every
change (time, reason, before, after). The file is one JSON document replaced atomically
(a temporary file, then a rename), so a reader sees the old or the new one, whole. Until the
first ``set`` (or after ``clear``) the app's config (``infra/serve.yaml``) decides.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

KEY = "experiment"  # the watcher's key for this file


class ExperimentStore:
    """The experiment override file at ``path`` (a local path)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _doc(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.path.read_text())
            return doc
        except FileNotFoundError:
            return {"revision": 0, "current": None, "history": []}

    def revision(self) -> str | None:
        """A string that changes with every ``set``/``clear``; None when there is no file."""
        return str(self._doc()["revision"]) if self.path.exists() else None

    def read(self) -> dict[str, Any] | None:
        """The current override (weights, salt, shadow), or None: the config decides."""
        current: dict[str, Any] | None = self._doc()["current"]
        return current

    def history(self) -> list[dict[str, Any]]:
        return list(self._doc()["history"])

    def set(self, experiment: dict[str, Any] | None, *, reason: str = "") -> dict[str, Any]:
        """Replace the override (None: back to the config); returns the change recorded."""
        doc = self._doc()
        change = {"at": dt.datetime.now(dt.UTC).isoformat(), "reason": reason,
                  "before": doc["current"], "after": experiment}
        doc.update(revision=int(doc["revision"]) + 1, current=experiment,
                   history=[*doc["history"], change])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.path)
        return change
