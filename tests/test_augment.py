"""augment: flips, shifts and noise on training batches only, on the pictures, seeded."""

from __future__ import annotations

import pytest
import torch

from mlptrain import augment, pipeline
from mlptrain.config import AugmentSpec, validate_dict
from mlptrain.errors import ConfigError
from mlptrain.summary import describe

from imagefiles import write_mnist

CPU = torch.device("cpu")
NONE = {"kind": "none"}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 64, c: int = 1, h: int = 6, w: int = 5) -> torch.Tensor:
    return torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c * h * w) + 1.0  # no zero pixel


def test_nothing_switched_on_builds_nothing():
    assert augment.build(AugmentSpec(), [1, 6, 5], NONE, CPU) is None


def test_hflip_mirrors_some_images_and_leaves_the_others():
    x = _images()
    out = augment.build(AugmentSpec(hflip=True), [1, 6, 5], NONE, CPU)(x, gen(0))
    pictures, mirrored = x.reshape(-1, 6, 5), out.reshape(-1, 6, 5)
    same = (mirrored == pictures).flatten(1).all(1)
    flipped = (mirrored == pictures.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all()
    assert 10 < int(flipped.sum()) < 54  # about half of 64


@pytest.mark.parametrize("dy, dx", [(0, 0), (1, 0), (0, -2), (-2, 1), (2, 2)])
def test_translate_moves_each_image_by_its_offset_with_black_fill(dy, dx):
    img = torch.arange(1, 31, dtype=torch.float32).reshape(1, 1, 6, 5)
    out = augment.translate(img, torch.tensor([dy]), torch.tensor([dx]), 2)[0, 0]
    expected = torch.zeros(6, 5)
    for r in range(6):
        for c in range(5):
            if 0 <= r - dy < 6 and 0 <= c - dx < 5:
                expected[r, c] = img[0, 0, r - dy, c - dx]
    torch.testing.assert_close(out, expected)


def test_shift_draws_offsets_within_the_limit_per_image():
    x = _images(b=200, h=7, w=7)
    out = augment.build(AugmentSpec(shift=2), [1, 7, 7], NONE, CPU)(x, gen(0)).reshape(-1, 7, 7)
    pictures = x.reshape(-1, 7, 7)
    seen = set()
    for i in range(200):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(out[i], augment.translate(pictures[i][None, None], torch.tensor([dy]), torch.tensor([dx]), 2)[0, 0])]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 25  # every offset in [-2, 2]^2 drawn


def test_flips_and_shifts_work_on_pixels_not_on_standardized_values():
    """Rows are standardized per pixel; moving a standardized value to another pixel would mix statistics."""
    raw = torch.rand(32, 3 * 4 * 4)
    mean, std = raw.mean(0), raw.std(0) + 0.1
    scaler = {"kind": "standard", "shift": mean.tolist(), "scale": std.tolist()}
    out = augment.build(AugmentSpec(hflip=True, shift=1), [3, 4, 4], scaler, CPU)((raw - mean) / std, gen(3))
    back = (out * std + mean).reshape(-1)
    pixels = torch.cat([raw.reshape(-1), torch.zeros(1)])
    nearest = (back[:, None] - pixels[None, :]).abs().min(dim=1).values
    assert float(nearest.max()) < 1e-5  # only moved pixels and black borders


def test_noise_adds_gaussian_noise_of_the_given_std():
    x = torch.zeros(4000, 10)
    out = augment.build(AugmentSpec(noise=0.3), None, NONE, CPU)(x, gen(0))
    assert abs(float(out.std()) - 0.3) < 0.01 and abs(float(out.mean())) < 0.01


def test_the_same_seed_draws_the_same_batches():
    spec = AugmentSpec(hflip=True, shift=1, noise=0.1)
    apply = augment.build(spec, [1, 6, 5], NONE, CPU)
    x = _images()
    a, b, c = (apply(x, gen(s)) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("key", ["hflip", "shift"])
def test_moving_pixels_of_data_without_images_is_refused_in_one_line(key):
    """(digits was the example of data without images until it became an image set: iris is one now)"""
    spec = validate_dict({"data": {"name": "iris"}, "augment": {key: True if key == "hflip" else 2}}, "t")
    for check in (lambda: describe(spec), lambda: pipeline.build(spec)):
        with pytest.raises(ConfigError) as exc:
            check()
        msg = str(exc.value)
        assert "\n" not in msg and f"augment.{key}" in msg and "'iris' has no image shape" in msg


def test_training_on_images_sees_augmented_batches_and_evaluation_does_not(tmp_path):
    write_mnist(tmp_path, n_train=60, n_test=20, size=8)
    raw = {"data": {"name": "mnist", "root": str(tmp_path)}, "model": {"hidden": [8]},
           "train": {"epochs": 2, "batch_size": 16, "device": "cpu", "backprop": "autograd"},  # the spy wraps model.forward
           "logging": {"tensorboard": False, "progress": "none"}}
    seen: dict[str, list[torch.Tensor]] = {"train": [], "eval": []}

    def run(augmented: bool) -> dict:
        spec = validate_dict({**raw, "augment": {"hflip": augmented, "shift": 2 if augmented else 0}}, "t")
        original = pipeline.build

        def build(*args, **kwargs):
            built = original(*args, **kwargs)
            forward = built.model.forward

            def spy(x):
                seen["train" if built.model.training else "eval"].append(x.detach().clone())
                return forward(x)

            built.model.forward = spy
            return built

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(pipeline, "build", build)
            out = pipeline.train(spec, pipeline.start_run(spec, None, tmp_path / f"run{augmented}"), "cpu")
        return out.metrics

    plain = run(False)
    plain_batches = [t for t in seen["train"]]
    plain_eval = [t for t in seen["eval"]]
    seen["train"].clear()
    seen["eval"].clear()
    augmented = run(True)
    assert plain != augmented
    assert not torch.equal(torch.cat(plain_batches), torch.cat(seen["train"]))  # same rows, same order: moved pixels
    assert torch.equal(plain_eval[0], seen["eval"][0])  # the first evaluation sees the data as it is
