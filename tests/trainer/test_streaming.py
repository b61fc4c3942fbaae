"""The sample stream: images read lazily (in workers, through the cache), the same inputs whether
streamed or decoded directly, bounded read-ahead, and an unreadable image named by its sample."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from forgetmi_trainer import storage, synthetic
from forgetmi_trainer.contract import DataConfig
from forgetmi_trainer.errors import InputError
from forgetmi_trainer.images import decode_image, resolve_image_uri
from forgetmi_trainer.manifest import Manifest, read_manifest
from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.reading import sample_name
from forgetmi_trainer.streaming import SampleStream, chunks, native_shape
from forgetmi_trainer.tokenizer import build_tokenizer, build_vocabulary

CPU = torch.device("cpu")
PREP = ImagePreprocessing(height=12, width=12, num_channels=1, do_normalize=True, image_mean=(0.5,), image_std=(0.25,))


@pytest.fixture(scope="module")
def png_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Manifest]:
    root = tmp_path_factory.mktemp("stream")
    samples = synthetic.generate(synthetic.SynthParams(patients=12, seed=3))
    uri = synthetic.write_dataset(samples, (root / "data").as_uri(), "png")
    return uri, read_manifest(uri)


def _stream(uri: str, manifest: Manifest, tmp_path: Path, **settings: object) -> SampleStream:
    tokenizer = build_tokenizer(build_vocabulary(manifest.texts), tmp_path / "tok", max_length=16)
    return SampleStream(manifest, uri, PREP, tokenizer, max_length=16, device=CPU,
                        settings=DataConfig(**settings), cache_dir=tmp_path / "cache")  # type: ignore[arg-type]


def _expected(uri: str, manifest: Manifest, row: int) -> np.ndarray:
    image_uri = resolve_image_uri(manifest.image_uris[row], uri)
    return PREP.apply(decode_image(storage.read_bytes(image_uri), image_uri))


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_are_the_decoded_and_preprocessed_images_in_order(
    png_dataset: tuple[str, Manifest], tmp_path: Path, workers: int
) -> None:
    uri, manifest = png_dataset
    with _stream(uri, manifest, tmp_path, workers=workers) as stream:
        rows = np.arange(len(manifest))[::-1].copy()
        samples = stream.view(rows)
        got = torch.cat([b.pixels for b in samples.in_order(7)])
        labels = torch.cat([b.labels for b in samples.in_order(7, text=False)])
    assert got.shape == (len(manifest), 1, 12, 12)
    for i in (0, 5, len(rows) - 1):
        np.testing.assert_allclose(got[i].numpy(), _expected(uri, manifest, int(rows[i])), atol=1e-6)
    assert labels.tolist() == manifest.labels[rows].tolist()


def test_take_reads_each_distinct_sample_once_and_keeps_repeats_and_order(
    png_dataset: tuple[str, Manifest], tmp_path: Path
) -> None:
    uri, manifest = png_dataset
    with _stream(uri, manifest, tmp_path, workers=0) as stream:
        samples = stream.view(np.arange(10, 30))
        picked = samples.take(torch.tensor([3, 0, 3, 19]))
        whole = samples.all()
    assert torch.equal(picked.pixels[0], picked.pixels[2])
    for j, p in enumerate([3, 0, 3, 19]):
        assert torch.equal(picked.pixels[j], whole.pixels[p])
        assert torch.equal(picked.input_ids[j], whole.input_ids[p])
    assert picked.labels.tolist() == manifest.labels[[13, 10, 13, 29]].tolist()


def test_reports_are_tokenised_only_when_text_is_asked_for(png_dataset: tuple[str, Manifest], tmp_path: Path) -> None:
    uri, manifest = png_dataset
    with _stream(uri, manifest, tmp_path, workers=0) as stream:
        with_text = next(stream.view(np.arange(4)).in_order(4))
        without = next(stream.view(np.arange(4)).in_order(4, text=False))
    assert with_text.input_ids.shape == (4, 16) and int(with_text.attention_mask.sum()) > 0
    assert without.input_ids.shape == (4, 0)


def test_images_are_read_only_as_batches_are_consumed(s3_bucket: str, tmp_path: Path) -> None:
    """With one worker reading two batches ahead, after k batches at most (k + 2) batches' images
    were fetched into the cache: the stream never reads the whole set up front."""
    samples = synthetic.generate(synthetic.SynthParams(patients=40, seed=1))
    uri = synthetic.write_dataset(samples, storage.join(s3_bucket, "lazy"), "png")
    manifest = read_manifest(uri)
    bs = 8
    with _stream(uri, manifest, tmp_path, workers=1, prefetch_batches=2) as stream:
        batches: Iterator = stream.view(np.arange(len(manifest))).in_order(bs, text=False)
        for k in range(1, 4):
            next(batches)
            fetched = len(list((tmp_path / "cache").iterdir()))
            assert fetched <= (k + 2) * bs, (k, fetched)
        assert len(manifest) > 6 * bs
        rest = sum(len(b) for b in batches)
    assert rest == len(manifest) - 3 * bs


def test_an_unreadable_image_names_its_sample_and_never_its_patient(
    png_dataset: tuple[str, Manifest], tmp_path: Path
) -> None:
    uri, manifest = png_dataset
    broken = Path(storage.base._file_path(resolve_image_uri(manifest.image_uris[4], uri)))
    original = broken.read_bytes()
    try:
        broken.write_bytes(original[: len(original) // 3])
        for workers in (0, 1):
            with _stream(uri, manifest, tmp_path / str(workers), workers=workers) as stream:
                with pytest.raises(InputError) as err:
                    stream.view(np.arange(8)).all()
            assert sample_name(manifest, 4) in str(err.value)  # its ID holds the patient's: the row is named
            assert manifest.subject_ids[4] not in str(err.value)
            assert "Traceback" not in str(err.value)
    finally:
        broken.write_bytes(original)


def test_a_missing_image_is_an_input_error_naming_the_sample(png_dataset: tuple[str, Manifest], tmp_path: Path) -> None:
    uri, manifest = png_dataset
    gone = Manifest(**{**manifest.__dict__, "image_uris": ["images/nowhere.png", *manifest.image_uris[1:]]})
    with _stream(uri, gone, tmp_path, workers=0) as stream, pytest.raises(InputError, match="does not exist") as err:
        stream.view(np.arange(3)).all()
    assert sample_name(manifest, 0) in str(err.value) and manifest.subject_ids[0] not in str(err.value)


def test_a_pass_cannot_start_inside_another(png_dataset: tuple[str, Manifest], tmp_path: Path) -> None:
    uri, manifest = png_dataset
    with _stream(uri, manifest, tmp_path, workers=0) as stream:
        outer = stream.view(np.arange(10)).in_order(2)
        next(outer)
        with pytest.raises(RuntimeError, match="another pass"):
            stream.view(np.arange(4)).all()


def test_chunks_walk_memory_and_streams_alike(png_dataset: tuple[str, Manifest], tmp_path: Path) -> None:
    uri, manifest = png_dataset
    with _stream(uri, manifest, tmp_path, workers=0) as stream:
        samples = stream.view(np.arange(9))
        in_memory = samples.all()
        streamed = torch.cat([b.pixels for b in chunks(samples, 4)])
        walked = torch.cat([b.pixels for b in chunks(in_memory, 4)])
    assert torch.equal(streamed, walked)


def test_native_shape_is_the_stored_images_shape(png_dataset: tuple[str, Manifest], tmp_path: Path) -> None:
    uri, manifest = png_dataset
    assert native_shape(manifest, uri, 0, tmp_path / "cache", DataConfig()) == (1, 16, 16)


def test_prefetch_copies_the_s3_images_asked_for_into_the_cache_in_the_background(
    s3_bucket: str, tmp_path: Path
) -> None:
    samples = synthetic.generate(synthetic.SynthParams(patients=12, seed=2))
    uri = synthetic.write_dataset(samples, storage.join(s3_bucket, "prefetch"), "png")
    manifest = read_manifest(uri)
    with _stream(uri, manifest, tmp_path, workers=0) as stream:
        stream.prefetch(np.arange(10, 30))
        assert stream._prefetch is not None
        stream._prefetch.join(timeout=60)
        cached = {p.name for p in (tmp_path / "cache").iterdir()}
        assert len(cached) == 20
        again = stream.view(np.arange(10, 30)).all()  # read from the cache: the same inputs
        assert torch.equal(again.pixels[0], torch.from_numpy(_expected(uri, manifest, 10)))
    assert {p.name for p in (tmp_path / "cache").iterdir()} == cached


def test_prefetch_of_file_images_copies_nothing(png_dataset: tuple[str, Manifest], tmp_path: Path) -> None:
    uri, manifest = png_dataset
    with _stream(uri, manifest, tmp_path, workers=0) as stream:
        stream.prefetch(np.arange(len(manifest)))
    assert not any((tmp_path / "cache").iterdir())


def test_the_audit_batch_holds_a_bounded_number_of_pixels_unless_set() -> None:
    from forgetmi_trainer.streaming import eval_batch_size

    def prep(side: int, channels: int = 1) -> ImagePreprocessing:
        return ImagePreprocessing(height=side, width=side, num_channels=channels)  # type: ignore[arg-type]

    assert eval_batch_size(DataConfig(), prep(64)) == 256
    assert eval_batch_size(DataConfig(), prep(512)) == 16
    assert eval_batch_size(DataConfig(), prep(512, 3)) == 5
    assert eval_batch_size(DataConfig(), prep(4096)) == 1
    assert eval_batch_size(DataConfig(eval_batch_size=7), prep(512)) == 7


def test_a_sample_is_named_by_its_id_unless_the_id_holds_the_patients() -> None:
    manifest = Manifest(sample_ids=["P00012-S01", "dicom-7f3a"], subject_ids=["P00012", "P00013"],
                        image_uris=["a.png", "b.png"], texts=["", ""], labels=np.zeros(2, dtype=np.int64),
                        splits=["train", "train"])
    assert sample_name(manifest, 0) == "the sample in manifest row 1"
    assert sample_name(manifest, 1) == "sample dicom-7f3a"
