"""Progress reporting: JSON lines to a file, the latest line to a storage object, and a bar or
plain log lines for a person watching."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from forgetmi_trainer import storage
from forgetmi_trainer.contract import Progress
from forgetmi_trainer.errors import StorageError

log = logging.getLogger(__name__)


class ProgressReporter:
    """Call :meth:`update` once per epoch; ETA is extrapolated from the mean epoch time."""

    def __init__(
        self,
        phase: str,
        *,
        path: str | None = None,
        uri: str | None = None,
        uri_interval_seconds: float = 5.0,
        bar: bool | None = None,
    ) -> None:
        self.phase = phase
        self.path = Path(path) if path else None
        self.uri = uri
        self.uri_interval_seconds = uri_interval_seconds
        self.bar = sys.stderr.isatty() if bar is None else bar
        self.start = time.monotonic()
        self._last_upload = 0.0

    def update(self, epoch: int, epochs: int, loss: float | None = None) -> Progress:
        elapsed = time.monotonic() - self.start
        eta = elapsed / epoch * (epochs - epoch) if epoch else 0.0
        progress = Progress(
            epoch=epoch,
            epochs=epochs,
            percent=round(100.0 * epoch / epochs, 2),
            eta_seconds=round(eta, 2),
            loss=loss,
            phase=self.phase,
        )
        line = progress.model_dump_json()
        if self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(line + "\n")
        now = time.monotonic()
        if self.uri and (epoch == epochs or now - self._last_upload >= self.uri_interval_seconds):
            try:
                storage.write_text(self.uri, line + "\n")
                self._last_upload = now
            except StorageError as err:  # progress is advisory: never fail a run for it
                log.warning("Could not write progress to %s: %s", self.uri, err)
        if self.bar:
            filled = int(30 * epoch / epochs)
            sys.stderr.write(
                f"\r{self.phase:>9} [{'#' * filled}{'.' * (30 - filled)}] {epoch}/{epochs} eta {eta:5.1f}s"
            )
            if epoch == epochs:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif epoch == epochs or epoch % max(1, epochs // 5) == 0:
            log.info(
                "%s epoch %d/%d (%.0f%%), eta %.1fs", self.phase.capitalize(), epoch, epochs, progress.percent, eta
            )
        return progress
