"""The watcher: one deployment reads the registry's pointers and the experiment file; every
scorer and ingress replica asks it.

``RegistryWatcher.changed(known)`` is a long poll: it answers as soon as a key a replica
follows has another value than ``known`` says (or after ``hold_s``, unchanged). Keys are
``family/pointer`` (the version it names) and ``experiment`` (the revision of the experiment
file, :mod:`serve.experiment`). One replica reads every ``reload_poll_s`` whatever the number
of replicas that ask: a small file per key a poll, not a storm of reads from each replica.
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve

from models.registry import Registry
from serve.experiment import KEY as EXPERIMENT
from serve.experiment import ExperimentStore

log = logging.getLogger(__name__)
Key = str  # "family/pointer"


@serve.deployment(num_replicas=1)
class RegistryWatcher:
    """Polls the pointers some scorer follows; answers long polls about them."""

    def __init__(self, root: str, experiment_path: str, poll_s: float,
                 hold_s: float = 20.0) -> None:
        self.registry = Registry(root)
        self.experiment = ExperimentStore(experiment_path)
        self.poll_s = poll_s
        self.hold_s = hold_s
        self.current: dict[Key, str | None] = {}
        self.changed_event = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._poll())

    def _read(self) -> dict[Key, str | None]:
        out = {}
        for key in list(self.current):
            if key == EXPERIMENT:
                out[key] = self.experiment.revision()
                continue
            family, pointer = key.split("/", 1)
            out[key] = self.registry.pointer(family, pointer)
        return out

    async def _poll(self) -> None:
        while True:
            try:
                now = await asyncio.to_thread(self._read)
                if any(self.current.get(k) != v for k, v in now.items()):
                    self.current.update(now)
                    self.changed_event.set()
                    self.changed_event = asyncio.Event()
            except Exception as err:  # a registry read failed: keep the last answer
                log.warning("reading the registry's pointers failed: %r", err)
            await asyncio.sleep(self.poll_s)

    async def changed(self, known: dict[Key, str | None]) -> dict[Key, str | None]:
        """The versions of ``known``'s pointers, once one differs (or after ``hold_s``)."""
        new = [k for k in known if k not in self.current]
        if new:
            for key in new:
                self.current[key] = None
            self.current.update(await asyncio.to_thread(self._read))
        deadline = asyncio.get_running_loop().time() + self.hold_s
        while all(self.current.get(k) == v for k, v in known.items()):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            event = self.changed_event
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                break
        return {k: self.current.get(k) for k in known}
