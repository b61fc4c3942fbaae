"""The parts of the audit that ``bench/unlearn_vs_retrain.py`` builds itself per seed: the LiRA reference
models and the count of sample-passes a method spends. (The V/T split is the trainer's own
``splits.deal``, in bench/unlearn_vs_retrain.py.)

* **References** (``--lira``): K = 4 models trained in memory with the original's recipe on random
  halves of the training patients, each patient IN exactly K/2 of them (the trainer's
  ``references.assign``, as ``forgetmi-trainer references`` does); their per-sample LiRA confidence
  phi on every sample goes to ``evaluate.model_metrics`` as ``lira.ReferenceStats``. They cost K
  trainings of the original per reported seed.
* **Sample-passes** (:class:`PassCounter`): samples through the image encoder, counted by a
  global forward hook while a method runs. Every forward of the model, full or image-only, runs
  the image encoder once per sample, so this counts every forward pass of a sample; those with a
  gradient (trainable encoder, grad enabled) are also counted as ``sample_passes_grad``, since each
  of them is followed by a backward pass.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from forgetmi_trainer import lira, references
from forgetmi_trainer.inference import image_logits
from forgetmi_trainer.model import SmallCNN, TransformersImageEncoder, build_model
from forgetmi_trainer.runtime import seed_everything
from forgetmi_trainer.train import TrainConfig, train_model

REFERENCES = 4


def train_references(world: Any, recipe: TrainConfig, k: int = REFERENCES) -> tuple[lira.ReferenceStats, float]:
    """K reference models for ``world`` (one seed's data) and their LiRA statistics on every sample:
    phi (N, k) and member (N, k) over the manifest's rows; also the seconds they took."""
    start = time.perf_counter()
    train_rows = np.asarray([s == "train" for s in world.manifest.splits])
    halves = references.assign(int(world.groups.max()) + 1, k, world.seed)
    member = halves[world.groups] & train_rows[:, None]  # a non-member row is OUT of every reference
    everything = world.encoded.to(world.device)
    phi = np.zeros(member.shape)
    for j in range(k):
        model = build_model(world.config, world.seed * 1000 + 500 + j)
        train_model(model, world.encoded.take(np.flatnonzero(member[:, j])), recipe,
                    generator=seed_everything(world.seed * 1000 + 500 + j), device=world.device,
                    precision=world.precision)
        logits = image_logits([model], everything, precision=world.precision)[0]
        phi[:, j] = lira.confidence(logits, world.encoded.labels.numpy())
    return lira.ReferenceStats(phi=phi, member=member), time.perf_counter() - start


def lira_inputs(stats: lira.ReferenceStats, forget_rows: np.ndarray, test_rows: np.ndarray) -> lira.LiraInputs:
    """The references' statistics aligned with the forget rows and the reported test (T) rows."""
    return lira.LiraInputs(
        forget=lira.ReferenceStats(phi=stats.phi[forget_rows], member=stats.member[forget_rows]),
        test=lira.ReferenceStats(phi=stats.phi[test_rows], member=stats.member[test_rows]),
    )


class PassCounter:
    """Samples through the image encoder while the context is open: ``passes`` in all, ``passes_grad``
    of them with a gradient (a forward + backward)."""

    ENCODERS = (SmallCNN, TransformersImageEncoder)

    def __init__(self) -> None:
        self.passes = 0
        self.passes_grad = 0
        self._handle: Any = None

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not isinstance(module, self.ENCODERS) or not args:
            return
        n = int(args[0].shape[0])
        self.passes += n
        if torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()):
            self.passes_grad += n

    def __enter__(self) -> PassCounter:
        self._handle = torch.nn.modules.module.register_module_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
