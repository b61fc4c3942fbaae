"""What ``bench/unlearn_vs_retrain.py`` runs at each scale: dataset size, model shapes, the
time-budget rule that may shorten the training recipe, and the record of the run's machine."""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from forgetmi_trainer.model import MultimodalConfig, tiny_bert_config

SCALES = {
    "small": {"patients": 150, "image_size": 16, "image_encoder": "cnn", "text_encoder": "tiny"},
    "paper": {"patients": 1100, "image_size": 256, "image_encoder": "resnet", "text_encoder": "bert-base"},
}
# --time-budget: the cost of everything but the original and retrain, per seed and fraction, in
# units of one training epoch over all training samples. An estimate, not a measurement: the
# 2026-11-28 CPU runs (every method ran all its epochs) gave ≈ 53 at 3 % (forget-mi 8, finetune
# 6, neggrad-plus 7, scrub 32), where every step costs about the same whatever its batch; on a GPU
# SCRUB's batch-16 steps weigh less against the batch-64 training steps, and the default
# --selection ForgetReachesTest stops Forget-MI after a few epochs. Scoring (six per fraction) is
# inside the margin.
OTHER_EPOCHS = 50


def resnet_config(channels: int) -> dict[str, Any]:
    """ResNet-18's shape (basic blocks, depths 2-2-2-2, widths 64-128-256-512) for ``channels`` inputs."""
    return {
        "model_type": "resnet",
        "num_channels": channels,
        "embedding_size": 64,
        "hidden_sizes": [64, 128, 256, 512],
        "depths": [2, 2, 2, 2],
        "layer_type": "basic",
        "hidden_act": "relu",
    }


def bert_base_config(vocab_size: int, layers: int = 12) -> dict[str, Any]:
    """BERT-base's size (768 hidden, 12 heads, 3072 intermediate; BERT's own dropout 0.1) over our vocabulary."""
    return {
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": 768,
        "num_hidden_layers": layers,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
    }


def model_config(
    args: argparse.Namespace, num_labels: int, image_size: int, channels: int, vocab: int
) -> MultimodalConfig:
    image: dict[str, Any] = {}
    if args.image_encoder == "resnet":
        image = {"image_encoder": "transformers", "image_encoder_config": resnet_config(channels)}
    text = (
        tiny_bert_config(vocab) if args.text_encoder == "tiny" else bert_base_config(vocab, args.text_layers or 12)
    )
    return MultimodalConfig(
        num_labels=num_labels, image_size=image_size, image_channels=channels, text_encoder_config=text, **image
    )


def budget_epochs(remaining: float, epoch_seconds: float, seeds: int, fractions: int, recipe_epochs: int) -> int:
    """Recipe epochs that fit ``remaining`` seconds, at most the recipe's own.

    Per seed: the original (E epochs) and per fraction retrain (≈ E epochs on the retain set)
    plus the other methods and the scoring (:data:`OTHER_EPOCHS` epochs)::

        seeds · epoch_seconds · (E · (1 + fractions) + OTHER_EPOCHS · fractions) ≤ remaining
    """
    per_seed = remaining / max(seeds, 1) / max(epoch_seconds, 1e-9)
    fitting = math.floor((per_seed - OTHER_EPOCHS * fractions) / (1 + fractions))
    return max(1, min(recipe_epochs, fitting))


def environment(args: argparse.Namespace, world: Any) -> dict[str, Any]:
    """Scale, model and machine of the run (recorded in results.json)."""
    env: dict[str, Any] = {
        "scale": args.scale,
        "image_size": args.image_size,
        "image_encoder": args.image_encoder,
        "text_encoder": args.text_encoder,
        "text_layers": (args.text_layers or 12) if args.text_encoder == "bert-base" else 1,
        "samples": len(world.samples),
        "training_samples": len(world.train),
        "parameters": sum(p.numel() for p in world.original.parameters()),
        "device": str(world.device),
        "precision": world.precision,
        "torch": torch.__version__,
    }
    if world.device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(world.device)
        env["cuda"] = torch.version.cuda
    return env
