"""What the classifier server predicts with: a fixed run (`FixedSlot`) or whatever version of a
registered model is in production (`RegistrySlot`).

`RegistrySlot` polls the registry (one cheap query a second). When the production version changes
(promote, rollback) it loads the new version on its own thread, warms it up with a few predictions,
and only then swaps it in: the model thread reads `slot.predictor` once per batch, so a batch that
started on the old version finishes on it, and no request fails or waits for the load. The version served before the last swap stays in
memory, so rolling back to it is immediate.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..threads import on_short_thread

log = logging.getLogger("lmforge.serve")
WARMUP_TEXTS = ["warm up the model"]


@dataclass
class Loaded:
    """A predictor with what logging and monitoring need about its version."""

    predictor: object
    version_tag: str
    registry_version: int | None = None
    vocab: frozenset = field(default_factory=frozenset)
    reference: dict | None = None


class FixedSlot:
    def __init__(self, predictor):
        self.current = Loaded(predictor, predictor.version)
        self.swaps = 0

    @property
    def predictor(self):
        return self.current.predictor

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class RegistrySlot:
    def __init__(self, registry, name: str, *, backend: str = "torch", poll_s: float = 1.0, on_swap=None):
        self.registry, self.name, self.backend, self.poll_s = registry, name, backend, poll_s
        self.on_swap = on_swap
        self.swaps = 0
        self.last_error: str | None = None
        version = registry.production(name)
        if version is None:
            known = ", ".join(registry.names()) or "none"
            raise UserError(f"registry:{name}: no production version (registered models: {known}); "
                            f"promote one with `lmforge registry promote {name} N`")
        self._marker = registry.production_marker(name)
        self.current = self._load(version)
        self._previous: Loaded | None = None  # kept in memory, so that a rollback swaps back at once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def predictor(self):
        return self.current.predictor

    def _load(self, version) -> Loaded:
        from ..lifecycle.reference import load_reference, load_vocab
        from ..predictor import Predictor

        predictor = Predictor.from_run(version.run_dir, backend=self.backend)
        predictor.version = version.ref
        return Loaded(predictor, version.ref, version.version, load_vocab(version.path), load_reference(version.path))

    def _load_warm(self, version) -> Loaded:
        loaded = self._load(version)
        for _ in range(3):  # allocate and pick kernels before real requests arrive
            loaded.predictor.predict(WARMUP_TEXTS)
        return loaded

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="lmforge-registry-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def check_now(self) -> bool:
        """Look at the registry once; swap if the production version changed. True when it swapped."""
        marker = self.registry.production_marker(self.name)
        if marker == self._marker:
            return False
        self._marker = marker
        production, _ = marker
        if production is None:
            log.warning("%s has no production version any more; still serving %s", self.name, self.current.version_tag)
            return False
        if production == self.current.registry_version:
            return False
        previous = self.current
        if self._previous is not None and self._previous.registry_version == production:
            loaded = self._previous  # a rollback to the version served just before: still in memory, no load
        else:
            version = self.registry.get(self.name, production)
            log.info("%s: production is now %s; loading it", self.name, version.ref)
            loaded = on_short_thread(lambda: self._load_warm(version))  # not on this long-lived thread (lmforge/threads.py)
        self._previous = previous
        self.current = loaded  # one reference assignment: the next batch uses the new version
        self.swaps += 1
        log.info("%s: now serving %s (was %s)", self.name, loaded.version_tag, previous.version_tag)
        if self.on_swap is not None:
            self.on_swap(loaded)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_now()
                self.last_error = None
            except Exception as err:  # noqa: BLE001 - keep serving the current version; retry next poll
                if str(err) != self.last_error:
                    log.exception("registry watch failed; still serving %s", self.current.version_tag)
                self.last_error = str(err)


def registry_target(target: str | Path) -> str | None:
    """The model name of a `registry:NAME` serve target, else None."""
    text = str(target)
    if not text.startswith("registry:"):
        return None
    name = text.split(":", 1)[1]
    if not name:
        raise UserError("registry:NAME: give the registered model's name, e.g. registry:intents")
    from ..lifecycle import check_name

    return check_name(name)  # before the registry folder is opened (or created)
