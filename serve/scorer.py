"""The scoring stage: one model variant, batched, following its registry pointer.

A ``Scorer`` replica holds one :class:`Loaded` model (a complete bank + top pair). One that
follows a pointer (``family`` / ``pointer``) asks the :class:`serve.watch.RegistryWatcher`
for changes (a long poll) on a task of its own; a new version is loaded on a thread (a top on
the bank already loaded when the bank did not change, else the whole model, every file's hash
checked) while the replica keeps scoring, and swapped in between batches: a batch takes the
current model once, so it is scored by one pair and answered with that pair's versions. A
version that fails to load or verify is not served: the old one stays, a log line and
``recstream_serve_model_reloads{outcome="failed"}`` say so, and it is tried again only after
``RETRY_S``.
"""

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Gauge

log = logging.getLogger(__name__)
RETRY_S = 30.0


@dataclass(frozen=True)
class Loaded:
    """A model and the versions it answers with."""

    model: Any
    version: str
    bank_version: str | None
    created: float | None = None  # the registry version's creation time (unix seconds)


@serve.deployment
class Scorer:
    """One model variant; requests from many users are batched into one forward pass."""

    def __init__(self, variant: str, source: dict[str, str | None], max_history: int,
                 registry_root: str, watcher: DeploymentHandle | None = None,
                 torch_threads: int | None = None) -> None:
        import torch

        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        self.variant = variant
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.max_history = max_history
        self.source = source
        self.key = f"{source.get('family')}/{source.get('pointer')}"
        self.reloads = Counter("recstream_serve_model_reloads",
                               description="Model versions a scorer replica swapped in, or "
                                           "failed to load",
                               tag_keys=("variant", "outcome"))  # type: ignore[arg-type]
        self.loaded_at = Gauge("recstream_serve_model_created_timestamp_seconds",
                               description="Creation time of the model version a scorer "
                                           "replica serves", tag_keys=("variant",))
        self.registry = None
        self.failed: dict[str, float] = {}
        if "model_dir" in source:
            from models.registry import load_checkpoint
            from models.registry.checkpoint import MODEL_META

            folder = Path(str(source["model_dir"]))
            model = load_checkpoint(folder, device=self.device)
            saved = (folder / MODEL_META).stat().st_mtime  # a folder's "creation": its save
            self._swap(Loaded(model, str(model.version), model.bank.version, saved))
            return
        from models.registry import Registry

        self.registry = Registry(registry_root)
        vid = source.get("version") or self.registry.pointer(str(source["family"]),
                                                             str(source["pointer"]))
        if vid is None:
            raise RuntimeError(f"variant {variant}: registry {registry_root} has no "
                               f"{self.key} pointer (run `recstream train` first)")
        self._swap(self._load(vid, None))
        if watcher is not None and source.get("version") is None:
            self.follow = asyncio.get_running_loop().create_task(self._follow(watcher))

    def _swap(self, loaded: Loaded) -> None:
        """Serve ``loaded`` from the next batch on."""
        self.current = loaded
        if loaded.created is not None:
            self.loaded_at.set(loaded.created, tags={"variant": self.variant})

    def _load(self, vid: str, previous: Loaded | None) -> Loaded:
        """The registry version ``vid``, on ``previous``'s bank when it is the same one."""
        assert self.registry is not None
        manifest = self.registry.manifest(vid)
        bank = None
        if previous is not None and previous.bank_version == manifest["bank_version"]:
            bank = previous.model.bank  # immutable and frozen: shared with the new top
        model = self.registry.load(vid, device=self.device, bank=bank)
        model.eval()
        created = dt.datetime.fromisoformat(manifest["created_at"]).timestamp()
        return Loaded(model, vid, manifest["bank_version"], created)

    async def _follow(self, watcher: DeploymentHandle) -> None:
        """Swap in each version the pointer moves to (see the module docstring)."""
        while True:
            try:
                now = await watcher.changed.remote({self.key: self.current.version})
                vid = now.get(self.key)
                if vid is None or vid == self.current.version or \
                        time.monotonic() < self.failed.get(vid, 0.0):
                    continue
                try:
                    loaded = await asyncio.to_thread(self._load, vid, self.current)
                except Exception as err:  # not served: the old version stays
                    self.failed[vid] = time.monotonic() + RETRY_S
                    self.reloads.inc(tags={"variant": self.variant, "outcome": "failed"})
                    log.error("variant %s: version %s failed to load, still serving %s: %r",
                              self.variant, vid, self.current.version, err)
                    continue
                self._swap(loaded)
                self.reloads.inc(tags={"variant": self.variant, "outcome": "ok"})
                log.info("variant %s: now serving %s", self.variant, vid)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the watcher restarting: ask again shortly
                log.warning("variant %s: registry watch failed: %r", self.variant, err)
                await asyncio.sleep(1.0)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.score_batch.set_max_batch_size(  # type: ignore[attr-defined]
            int(user_config["max_batch_size"]))
        self.score_batch.set_batch_wait_timeout_s(  # type: ignore[attr-defined]
            float(user_config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.001)
    async def score_batch(
        self, requests: list[tuple[list[int], list[int], list[int], list[int]]]
    ) -> list[tuple[list[float], str, str | None]]:
        from models.inference import score_batch

        current = self.current  # one complete (bank, top) pair for the whole batch
        # On a thread: the replica's loop keeps taking requests (the next batch) meanwhile.
        scores = await asyncio.to_thread(score_batch, current.model, requests,
                                         max_len=self.max_history)
        return [(s.tolist(), current.version, current.bank_version) for s in scores]

    async def score(self, hist_items: list[int], hist_cats: list[int], items: list[int],
                    cats: list[int]) -> tuple[list[float], str, str | None]:
        """Scores in candidate order, the model version and the bank version that made them."""
        out: tuple[list[float], str, str | None] = await self.score_batch(
            (hist_items, hist_cats, items, cats))
        return out
