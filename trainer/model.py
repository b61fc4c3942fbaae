"""The multimodal classifier of FORGET_MI.md §1 as a Hugging Face ``PreTrainedModel``.

An image encoder and a text encoder each end in a projection to a shared dimension ``d``;
an image head and a text head map those embeddings to class logits, and a fusion gate
builds the joint embedding the multimodal loss terms use::

    a = P_img(E_img(pixels))            (B, d)
    t = P_txt(E_txt(tokens)[CLS])       (B, d)
    g = sigmoid(W1 [a; t] + b1)         (B, d)
    h = W2 [a; g * t] + b2              (B, d)
    k = min(beta * |a| / |h|, 1)        (B, 1)
    j = LayerNorm(a + k * h)            (B, d)

Encoders are built from configs, so nothing is downloaded: the image encoder is a small
CNN, or any ``transformers`` vision backbone (``resnet``, ``vit``, ...) given as a config
dict; the text encoder is any ``transformers`` encoder config (BERT by default). A model built
on pretrained encoders (:mod:`forgetmi_trainer.encoders`) keeps their configs here and their
weights in its own ``model.safetensors``, so it loads from its directory alone.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.utils import ModelOutput

ImageEncoderKind = Literal["cnn", "transformers"]


class MultimodalConfig(PretrainedConfig):
    """Configuration of :class:`MultimodalClassifier` (saved as ``config.json``).

    ``image_encoder`` is ``"cnn"`` (``cnn_channels`` per stage, stride 2 after the first) or
    ``"transformers"`` with ``image_encoder_config`` a config dict with ``model_type``
    (``resnet``, ``vit``...). ``text_encoder_config`` is a config dict of any encoder.
    """

    model_type = "forgetmi-multimodal"

    def __init__(
        self,
        num_labels: int | None = None,
        embed_dim: int = 32,
        image_size: int = 16,
        image_channels: int = 1,
        image_encoder: ImageEncoderKind = "cnn",
        cnn_channels: tuple[int, ...] | list[int] = (8, 16),
        cnn_hidden: int = 64,
        image_encoder_config: dict[str, Any] | None = None,
        text_encoder_config: dict[str, Any] | None = None,
        gate_beta: float = 0.5,
        **kwargs: Any,
    ) -> None:
        if num_labels is None:
            # config.json stores the classes as id2label (no num_labels): take the count from it.
            num_labels = len(kwargs["id2label"]) if kwargs.get("id2label") else 4
        super().__init__(num_labels=num_labels, **kwargs)
        if image_encoder not in ("cnn", "transformers"):
            raise ValueError(f"image_encoder must be 'cnn' or 'transformers'; got {image_encoder!r}")
        if image_encoder == "transformers" and not image_encoder_config:
            raise ValueError("image_encoder='transformers' needs image_encoder_config with a model_type")
        self.embed_dim = embed_dim
        self.image_size = image_size
        self.image_channels = image_channels
        self.image_encoder = image_encoder
        self.cnn_channels = list(cnn_channels)
        self.cnn_hidden = cnn_hidden
        self.image_encoder_config = image_encoder_config
        self.text_encoder_config = text_encoder_config or tiny_bert_config(vocab_size=1000)
        self.gate_beta = gate_beta


AutoConfig.register(MultimodalConfig.model_type, MultimodalConfig, exist_ok=True)
"""``AutoConfig`` (and so ``AutoTokenizer`` reading a model directory) knows the classifier's config."""


def tiny_bert_config(
    vocab_size: int, hidden: int = 32, layers: int = 1, heads: int = 2, positions: int = 64
) -> dict[str, Any]:
    """A BERT config dict small enough for CPU tests and the demo (``positions``: the longest text)."""
    return {
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 4 * hidden,
        "max_position_embeddings": positions,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


def sub_config(spec: dict[str, Any], what: str) -> PretrainedConfig:
    """The ``transformers`` config of an encoder from its config dict (with its ``model_type``)."""
    spec = dict(spec)
    model_type = spec.pop("model_type", None)
    if not model_type:
        raise ValueError(f"{what} needs a model_type (e.g. 'bert', 'resnet', 'vit')")
    return AutoConfig.for_model(model_type, **spec)


def text_encoder_options(config: PretrainedConfig) -> dict[str, Any]:
    """Keyword arguments that build the text encoder of ``config`` without a pooling layer (the
    classifier reads the first token's hidden state), for the models whose constructor has one."""
    model_class = MODEL_MAPPING[type(config)]
    return {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(model_class).parameters else {}


class SmallCNN(nn.Module):
    """Conv stages (3x3, GELU, stride 2 after the first) then a hidden MLP: (B, C, H, W) -> (B, hidden)."""

    def __init__(self, in_channels: int, channels: list[int], image_size: int, hidden: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, prev = image_size, in_channels
        for i, ch in enumerate(channels):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(prev, ch, 3, stride=stride, padding=1), nn.GELU()]
            size = (size + stride - 1) // stride
            prev = ch
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(prev * size * size, hidden)
        self.out_dim = hidden

    def forward(self, pixels: Tensor) -> Tensor:
        return F.gelu(self.fc(self.conv(pixels).flatten(1)))


class TransformersImageEncoder(nn.Module):
    """Any ``transformers`` vision backbone built from its config: (B, C, H, W) -> (B, hidden)."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.backbone = AutoModel.from_config(config)
        self.out_dim = int(getattr(config, "hidden_size", None) or config.hidden_sizes[-1])

    def forward(self, pixels: Tensor) -> Tensor:
        out = self.backbone(pixel_values=pixels)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state[:, 0]
        return pooled.flatten(1)


class FusionGate(nn.Module):
    """The gate of FORGET_MI.md §1: image (B, d) and text (B, d) -> joint (B, d)."""

    def __init__(self, dim: int, beta: float) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * dim, dim)
        self.mix = nn.Linear(2 * dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.beta = beta

    def forward(self, a: Tensor, t: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate(torch.cat([a, t], dim=-1)))
        h = self.mix(torch.cat([a, g * t], dim=-1))
        ratio = self.beta * a.norm(dim=-1, keepdim=True) / h.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        kappa = ratio.clamp(max=1.0)
        return self.norm(a + kappa * h)


@dataclass
class MultimodalOutput(ModelOutput):
    """Embeddings (B, d) and logits (B, num_labels) of one forward pass."""

    loss: Tensor | None = None
    image_embeds: Tensor | None = None
    text_embeds: Tensor | None = None
    joint_embeds: Tensor | None = None
    image_logits: Tensor | None = None
    text_logits: Tensor | None = None


class MultimodalClassifier(PreTrainedModel):
    """Image + text classifier; metrics use the image head, text helps during training."""

    config_class = MultimodalConfig
    base_model_prefix = "multimodal"
    main_input_name = "pixel_values"

    def __init__(self, config: MultimodalConfig) -> None:
        super().__init__(config)
        if config.image_encoder == "cnn":
            self.image_encoder: nn.Module = SmallCNN(
                config.image_channels, list(config.cnn_channels), config.image_size, config.cnn_hidden
            )
        else:
            self.image_encoder = TransformersImageEncoder(
                sub_config(config.image_encoder_config or {}, "image_encoder_config")
            )
        text_config = sub_config(config.text_encoder_config, "text_encoder_config")
        self.text_encoder = AutoModel.from_config(text_config, **text_encoder_options(text_config))
        text_dim = int(self.text_encoder.config.hidden_size)
        self.image_proj = nn.Linear(self.image_encoder.out_dim, config.embed_dim)  # type: ignore[arg-type]
        self.text_proj = nn.Linear(text_dim, config.embed_dim)
        self.image_head = nn.Linear(config.embed_dim, config.num_labels)
        self.text_head = nn.Linear(config.embed_dim, config.num_labels)
        self.fusion = FusionGate(config.embed_dim, config.gate_beta)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Encoders initialise themselves in their constructors; keep PyTorch's defaults.
        return

    def encode_image(self, pixel_values: Tensor) -> Tensor:
        """(B, C, H, W) model input (the preprocessed image) -> image embedding a (B, d)."""
        return self.image_proj(self.image_encoder(pixel_values))

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, L) token ids and mask -> text embedding t (B, d) from the [CLS] position."""
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.text_proj(hidden[:, 0])

    def forward(
        self,
        pixel_values: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor | None = None,
        fusion: FusionGate | None = None,
    ) -> MultimodalOutput:
        """One pass; ``fusion`` overrides the model's own gate (unlearning shares one frozen gate)."""
        a = self.encode_image(pixel_values)
        t = self.encode_text(input_ids, attention_mask)
        j = (fusion or self.fusion)(a, t)
        image_logits, text_logits = self.image_head(a), self.text_head(t)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(image_logits.float(), labels) + F.cross_entropy(text_logits.float(), labels)
        return MultimodalOutput(
            loss=loss,
            image_embeds=a,
            text_embeds=t,
            joint_embeds=j,
            image_logits=image_logits,
            text_logits=text_logits,
        )


def build_model(config: MultimodalConfig, seed: int) -> MultimodalClassifier:
    """A freshly initialised model; the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultimodalClassifier(config)
