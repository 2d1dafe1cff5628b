"""Follow the model's source (the registry alias, or a folder's newest version): load the
version it names, check it, swap it in; keep serving on failure."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from iris_api.metrics import Metrics
from iris_api.model import ModelError, Predictor, build
from iris_api.settings import ApiSettings
from iris_api.sources import FolderSource, ModelSource, RegistrySource
from iris_core.registry import RegistryError

log = logging.getLogger(__name__)

#: First retry delay after a failed check; it doubles up to the poll interval.
BACKOFF_START_S = 0.5


class ModelFollower:
    """Holds the served model (`current`, the champion) and, in gated promotion, the
    challenger scored beside it (`challenger`). Each changes by one reference assignment,
    never in place, and only to a model that passed its checks."""

    def __init__(
        self,
        settings: ApiSettings,
        metrics: Metrics,
        source: ModelSource | None = None,
        challenger_source: ModelSource | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.source = source or source_of(settings)
        self.challenger_source = challenger_source or (
            source_of(settings, settings.challenger_alias)
            if settings.promotion == "gated" and settings.model_dir is None
            else None
        )
        self.current: Predictor | None = None
        self.challenger: Predictor | None = None
        self.reason = "no model loaded yet"
        self._task: asyncio.Task[None] | None = None
        #: One registry check at a time: the poll and a check asked for by a client.
        self._checking = asyncio.Lock()

    @property
    def wanted(self) -> str:
        return self.source.description

    def fetch(self) -> Predictor | None:
        """One check of the source (blocking): the version it names, read and checked, when it
        is not the one served and is ready to load; else None."""
        try:
            found = self.source.wanted()
        except RegistryError:
            self.metrics.registry_errors.inc()
            raise
        if found is None:
            if self.current is None:
                self.reason = self.source.missing
            else:
                log.warning("%s names no version any more; still serving version %s",
                            self.wanted, self.current.version.version)  # fmt: skip
            return None
        if self.current is not None and self.current.version.version == found.version:
            return None
        if found.status != "READY":
            log.info(
                "%s version %s is %s: not loading it yet", found.name, found.version, found.status
            )
            return None
        shadow = self.challenger
        if shadow is not None and shadow.version.version == found.version:
            # promoted: the challenger, loaded and checked already, is the champion at once
            return dataclasses.replace(shadow, version=found)
        try:
            return build(found, self.source.fetch(found), self.settings.ort_threads)
        except (RegistryError, ModelError) as e:
            self.metrics.reload_failed.inc()
            log.error("cannot load %s version %s: %s", found.name, found.version, e)
            raise

    def swap(self, predictor: Predictor) -> None:
        """Serve `predictor` from the next request on, the drift window on its reference bins.
        Called on the event loop, between requests, so the monitor never changes under one."""
        previous = self.current
        self.current = predictor  # the swap: requests in flight keep the object they hold
        if self.metrics.drift is not None:
            self.metrics.drift.set_reference(predictor.reference)
        v = predictor.version
        self.metrics.reload_ok.inc()
        self.metrics.model_loaded.set(1)
        self.metrics.model.info(
            {"name": v.name, "version": v.version, "alias": v.alias, "run_id": v.run_id}
        )
        self.metrics.served(v.version, role="served")
        log.info("serving %s version %s (was %s)", v.name, v.version,
                 previous.version.version if previous else "none")  # fmt: skip

    async def check_now(self) -> bool:
        """One registry check now, not at the next poll (the Open Inference Protocol's
        repository `load`); False when it failed (logged, counted, the reason kept)."""
        return await self._check()

    async def _check(self) -> bool:
        """One check, its blocking part off the event loop; False when it failed (logged,
        counted). Never raises: the follower must outlive any surprise, or the service would
        silently stop following."""
        async with self._checking:
            return await self._check_once()

    def fetch_challenger(self) -> Predictor | None:
        """The challenger the source names (blocking), read and checked, when it is new; the
        current one when it is unchanged; None when there is none (retired, promoted)."""
        assert self.challenger_source is not None  # noqa: S101 (gated promotion only)
        found = self.challenger_source.wanted()
        if found is None or found.status != "READY":
            return None
        shadow = self.challenger
        if shadow is not None and shadow.version.version == found.version:
            return shadow
        champion = self.current
        if champion is not None and champion.version.version == found.version:
            return dataclasses.replace(champion, version=found)
        return build(found, self.challenger_source.fetch(found), self.settings.ort_threads)

    async def _check_challenger(self) -> None:
        """The challenger swapped in, or out; a failure keeps the one there was (logged,
        counted): it never touches the champion or readiness."""
        try:
            shadow = await asyncio.to_thread(self.fetch_challenger)
        except (RegistryError, ModelError) as e:
            self.metrics.shadow_load_failures.inc()
            log.warning("challenger not loaded: %s", e)
            return
        previous = self.challenger
        if shadow is previous:
            return
        self.challenger = shadow
        self.metrics.served(shadow.version.version if shadow else None, role="shadow")
        log.info("scoring challenger %s (was %s)",
                 shadow.version.version if shadow else "none",
                 previous.version.version if previous else "none")  # fmt: skip

    async def _check_once(self) -> bool:
        try:
            predictor = await asyncio.to_thread(self.fetch)
            if predictor is not None:
                self.swap(predictor)
            if self.challenger_source is not None:
                await self._check_challenger()
        except (RegistryError, ModelError) as e:
            if self.current is None:
                self.reason = str(e)
            log.warning("registry check failed: %s", e)
            return False
        except Exception as e:
            if self.current is None:
                self.reason = f"unexpected error while loading the model: {e!r}"
            log.exception("registry check failed unexpectedly")
            return False
        return True

    async def _follow(self, failures: int) -> None:
        interval = self.settings.poll_interval_s
        while True:
            delay = (
                interval if failures == 0 else min(interval, BACKOFF_START_S * 2 ** (failures - 1))
            )
            await asyncio.sleep(delay)
            failures = 0 if await self._check() else failures + 1

    async def start(self) -> None:
        """First load attempt (the process starts even if it fails), then follow in background."""
        ok = await self._check()
        if not ok:
            log.warning("not ready: %s; retrying with backoff", self.reason)
        self._task = asyncio.create_task(self._follow(0 if ok else 1), name="model-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.source.close()
        if self.challenger_source is not None:
            self.challenger_source.close()


def source_of(settings: ApiSettings, alias: str | None = None) -> ModelSource:
    """The folder of IRIS_API_MODEL_DIR when it is set, else the registry alias (`alias`, or
    IRIS_API_MODEL_ALIAS)."""
    if settings.model_dir is not None:
        return FolderSource(settings.model_dir, settings.model_name)
    return RegistrySource(
        settings.tracking_url,
        settings.model_name,
        alias or settings.model_alias,
        settings.registry_timeout_s,
    )
