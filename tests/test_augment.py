"""augment: flips, shifts, rotations, zooms, elastic distortions, crops and noise on training batches only,
on the pictures, seeded; label noise and mixup on the targets."""

from __future__ import annotations

import json
from typing import Any

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


PIXEL_VALUES = {"hflip": True, "shift": 2, "rotate": 15.0, "scale": [0.9, 1.1], "elastic": {"alpha": 2.0}, "crop": 2}


@pytest.mark.parametrize("key", PIXEL_VALUES)
def test_moving_pixels_of_data_without_images_is_refused_in_one_line(key):
    """(digits was the example of data without images until it became an image set: iris is one now)"""
    spec = validate_dict({"data": {"name": "iris"}, "augment": {key: PIXEL_VALUES[key]}}, "t")
    for check in (lambda: describe(spec), lambda: pipeline.build(spec)):
        with pytest.raises(ConfigError) as exc:
            check()
        msg = str(exc.value)
        assert "\n" not in msg and f"augment.{key}" in msg and "'iris' has no image shape" in msg and "digits" in msg


def _spy_batches(raw: dict, tmp_path, name: str) -> tuple[dict, list[torch.Tensor], list[torch.Tensor]]:
    """(test metrics, the inputs of every training forward, of every evaluation forward) of a run."""
    seen: dict[str, list[torch.Tensor]] = {"train": [], "eval": []}
    original = pipeline.build

    def build(*args, **kwargs):
        built = original(*args, **kwargs)
        forward = built.model.forward

        def spy(x):
            seen["train" if built.model.training else "eval"].append(x.detach().clone())
            return forward(x)

        built.model.forward = spy
        return built

    spec = validate_dict(raw, "t")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "build", build)
        out = pipeline.train(spec, pipeline.start_run(spec, None, tmp_path / name), "cpu")
    return out.metrics, seen["train"], seen["eval"]


def test_training_on_images_sees_augmented_batches_and_evaluation_does_not(tmp_path):
    write_mnist(tmp_path, n_train=60, n_test=20, size=8)
    raw = {"data": {"name": "mnist", "root": str(tmp_path)}, "model": {"hidden": [8]},
           "train": {"epochs": 2, "batch_size": 16, "device": "cpu", "backprop": "autograd"},  # the spy wraps model.forward
           "logging": {"tensorboard": False, "progress": "none"}}

    def run(augmented: bool) -> tuple[dict, list[torch.Tensor], list[torch.Tensor]]:
        return _spy_batches({**raw, "augment": {"hflip": augmented, "shift": 2 if augmented else 0}}, tmp_path, f"run{augmented}")

    plain, plain_batches, plain_eval = run(False)
    augmented, batches, evals = run(True)
    assert plain != augmented
    assert not torch.equal(torch.cat(plain_batches), torch.cat(batches))  # same rows, same order: moved pixels
    assert torch.equal(plain_eval[0], evals[0])  # the first evaluation sees the data as it is


# ----------------------------------------------------------------------------------------------
# rotate, scale, elastic, crop: one sampling grid per batch.


def _square(b: int = 3, side: int = 7) -> torch.Tensor:
    return torch.rand(b, 1, side, side, generator=gen(5)) + 0.5


def test_rotating_by_90_degrees_on_a_square_grid_is_rot90():
    img = _square()
    torch.testing.assert_close(augment.warp(img, degrees=torch.full((3,), 90.0)), torch.rot90(img, 1, dims=(-2, -1)),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(augment.warp(img, degrees=torch.full((3,), -90.0)), torch.rot90(img, -1, dims=(-2, -1)),
                               atol=1e-4, rtol=0)


def test_rotating_a_non_square_image_by_180_degrees_turns_it_upside_down():
    img = torch.rand(2, 3, 5, 8, generator=gen(1))
    torch.testing.assert_close(augment.warp(img, degrees=torch.full((2,), 180.0)), img.flip(-1).flip(-2), atol=1e-4, rtol=0)


def test_zooming_out_by_half_shrinks_the_image_into_the_centre_with_a_black_border():
    out = augment.warp(torch.ones(1, 1, 8, 8), zoom=torch.tensor([0.5]))[0, 0]
    expected = torch.zeros(8, 8)
    expected[2:6, 2:6] = 1.0
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    img = _square(1, 8)
    torch.testing.assert_close(augment.warp(img, zoom=torch.tensor([2.0]))[0, 0, 3:5, 3:5],
                               torch.nn.functional.interpolate(img, scale_factor=2, mode="bilinear")[0, 0, 7:9, 7:9],
                               atol=1e-5, rtol=0)  # zoom 2: the middle of the image, twice as large


def test_elastic_distortion_with_alpha_0_is_the_identity_and_alpha_scales_a_smooth_field():
    img = _square()
    torch.testing.assert_close(augment.warp(img, displacement=torch.zeros(3, 2, 7, 7)), img, atol=1e-5, rtol=0)
    spec = AugmentSpec(elastic={"alpha": 1.0, "sigma": 3.0})
    one = augment.elastic_field(64, 16, 16, spec.elastic, gen(2), CPU)
    three = augment.elastic_field(64, 16, 16, AugmentSpec(elastic={"alpha": 3.0, "sigma": 3.0}).elastic, gen(2), CPU)
    torch.testing.assert_close(three, 3 * one)
    raw = torch.rand(64, 2, 16, 16, generator=gen(2)) * 2 - 1  # the field before smoothing

    def neighbours(f: torch.Tensor) -> float:  # correlation of horizontally adjacent displacements
        return float(torch.corrcoef(torch.stack([f[..., :-1].flatten(), f[..., 1:].flatten()]))[0, 1])

    assert neighbours(raw) < 0.1 and neighbours(one) > 0.8  # Gaussian-smoothed: neighbours move together
    assert AugmentSpec(elastic={"alpha": 0.0}).active is False


@pytest.mark.parametrize("sigma", [0.5, 1.5, 4.0])
def test_the_elastic_fields_smoothing_is_a_gaussian_convolution_with_black_borders(sigma):
    field = torch.rand(3, 2, 9, 12, generator=gen(4))
    radius = max(1, int(3 * sigma + 0.5))
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1.0) / sigma) ** 2)
    kernel = kernel / kernel.sum()
    conv = torch.nn.functional.conv2d(field.reshape(6, 1, 9, 12), kernel.view(1, 1, 1, -1), padding=(0, radius))
    conv = torch.nn.functional.conv2d(conv, kernel.view(1, 1, -1, 1), padding=(radius, 0)).reshape(3, 2, 9, 12)
    torch.testing.assert_close(augment.gaussian_smooth(field, sigma), conv)


def test_crop_pads_and_cuts_a_window_back_so_content_moves_by_up_to_the_padding():
    x = _images(b=100, h=7, w=7)
    out = augment.build(AugmentSpec(crop=2), [1, 7, 7], NONE, CPU)(x, gen(0)).reshape(-1, 7, 7)
    pictures, moved = x.reshape(-1, 7, 7), 0
    for i in range(100):
        windows = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(out[i], torch.nn.functional.pad(pictures[i], (2, 2, 2, 2))[2 - dy : 9 - dy, 2 - dx : 9 - dx])]
        assert len(windows) == 1
        moved += windows[0] != (0, 0)
    assert moved > 80  # 24 of the 25 windows move the content


@pytest.mark.parametrize("key", ["rotate", "scale", "elastic"])
def test_each_warp_changes_the_images_and_keeps_the_pixel_range(key):
    x = torch.rand(32, 64, generator=gen(7))  # pixels in [0, 1)
    out = augment.build(AugmentSpec(**{key: PIXEL_VALUES[key]}), [1, 8, 8], NONE, CPU)(x, gen(0))
    changed = (out - x).abs().flatten(1).amax(1) > 1e-2
    assert int(changed.sum()) >= 30 and float(out.min()) >= 0 and float(out.max()) <= float(x.max()) + 1e-6


def test_crop_with_shift_and_a_crop_as_large_as_the_image_are_refused_in_one_line():
    for aug, words in (({"crop": 2, "shift": 1}, "keep one of them"), ({"crop": 8}, "keep it below 8")):
        spec = validate_dict({"data": {"name": "digits"}, "augment": aug}, "t")
        with pytest.raises(ConfigError, match=words) as exc:
            describe(spec)
        assert "\n" not in str(exc.value)


@pytest.mark.parametrize("data", ["digits", "fashion_mnist"])
@pytest.mark.parametrize("key", ["rotate", "scale", "elastic", "crop"])
def test_each_distortion_trains_on_digits_and_fashion_mnist_and_evaluation_sees_the_data_as_it_is(data, key, tmp_path):
    if data == "fashion_mnist":
        write_mnist(tmp_path / "fm", n_train=60, n_test=20, size=12)
    raw = {"data": {"name": data, **({"root": str(tmp_path / "fm")} if data == "fashion_mnist" else {})},
           "model": {"hidden": [8]},
           "train": {"epochs": 1, "batch_size": 64, "device": "cpu", "backprop": "autograd"},  # the spy wraps model.forward
           "logging": {"tensorboard": False, "progress": "none"}}
    plain, plain_train, plain_eval = _spy_batches(raw, tmp_path, "plain")
    moved, moved_train, moved_eval = _spy_batches({**raw, "augment": {key: PIXEL_VALUES[key]}}, tmp_path, key)
    assert plain != moved
    assert not torch.equal(torch.cat(plain_train), torch.cat(moved_train))  # same rows, same order: moved pixels
    assert torch.equal(plain_eval[0], moved_eval[0])


# ----------------------------------------------------------------------------------------------
# label noise and mixup: the targets' side.


def test_label_noise_replaces_that_fraction_by_uniform_classes():
    y = torch.arange(20000) % 10
    noisy = augment.label_noise(y, 0.3, 10, gen(0))
    changed = noisy != y
    assert abs(float(changed.float().mean()) - 0.3 * 9 / 10) < 0.015  # a drawn class may be the old one
    counts = torch.bincount(noisy[changed] - y[changed] + 10, minlength=20)
    assert int(counts[10]) == 0 and int((counts > 0).sum()) == 18  # every other class drawn
    binary = torch.randint(0, 2, (20000, 1), generator=gen(1)).float()
    flipped = augment.label_noise(binary, 0.4, 2, gen(2))
    assert flipped.shape == binary.shape and flipped.dtype == binary.dtype
    assert abs(float((flipped != binary).float().mean()) - 0.2) < 0.015


def test_mixup_mixes_rows_and_targets_by_one_beta_lambda_per_pair():
    from scipy import stats

    x, y = torch.randn(4000, 5, generator=gen(0)), torch.arange(4000) % 3
    mixed_x, mixed_y, lam, perm = augment.mixup(x, y, 0.4, 3, gen(1))
    one_hot = torch.nn.functional.one_hot(y, 3).float()
    torch.testing.assert_close(mixed_x, lam[:, None] * x + (1 - lam[:, None]) * x[perm])
    torch.testing.assert_close(mixed_y, lam[:, None] * one_hot + (1 - lam[:, None]) * one_hot[perm])
    assert sorted(perm.tolist()) == list(range(4000)) and not torch.equal(perm, torch.arange(4000))
    torch.testing.assert_close(mixed_y.sum(1), torch.ones(4000))
    assert stats.kstest(lam.numpy(), stats.beta(0.4, 0.4).cdf).pvalue > 0.01  # λ ~ Beta(α, α)
    assert stats.kstest(lam.numpy(), stats.beta(2.0, 2.0).cdf).pvalue < 1e-6
    values = torch.randn(100, 2, generator=gen(3))  # regression targets (and binary 0/1) are mixed as they are
    _, mixed_v, lam_v, perm_v = augment.mixup(torch.zeros(100, 1), values, 1.0, None, gen(4))
    torch.testing.assert_close(mixed_v, lam_v[:, None] * values + (1 - lam_v[:, None]) * values[perm_v])


def _spy_targets(raw: dict, tmp_path, name: str) -> tuple[Any, list[torch.Tensor], torch.Tensor]:
    """(the run, the targets the loss got at every training step, the clean training targets)."""
    steps: list[torch.Tensor] = []
    clean: list[torch.Tensor] = []
    original = pipeline.build

    def build(*args, **kwargs):
        built = original(*args, **kwargs)
        loss_fn = built.loss_fn
        clean.append(torch.from_numpy(built.prepared.train.y))

        def spy(z, y):
            if not torch.is_inference_mode_enabled():  # evaluation scores in inference mode
                steps.append(y.detach().clone())
            return loss_fn(z, y)

        built.loss_fn = spy
        return built

    spec = validate_dict(raw, "t")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "build", build)
        out = pipeline.train(spec, pipeline.start_run(spec, None, tmp_path / name), "cpu")
    return out, steps, clean[0]


DIGITS_RUN = {"data": {"name": "digits"}, "model": {"hidden": [16]},
              "train": {"epochs": 2, "batch_size": 100, "shuffle": False, "device": "cpu", "backprop": "autograd",
                        "early_stopping": {"enabled": False}},  # the spy wraps the loss, which manual backprop skips
              "logging": {"tensorboard": False, "progress": "none"}}


def test_label_noise_changes_about_that_fraction_of_every_batchs_labels_anew_each_step(tmp_path):
    out, steps, clean = _spy_targets({**DIGITS_RUN, "augment": {"label_noise": 0.4}}, tmp_path, "noisy")
    per_epoch = len(steps) // 2
    assert per_epoch == -(-len(clean) // 100) and out.summary["backprop"] == "autograd"
    fractions = []
    for i, y in enumerate(steps):
        b = i % per_epoch
        truth = clean[b * 100 : (b + 1) * 100]  # no shuffle: batch b holds rows 100 b ...
        assert y.shape == truth.shape and y.dtype == truth.dtype
        fractions.append(float((y != truth).float().mean()))
    assert all(0.15 < f < 0.6 for f in fractions[:-1])  # (the last batch is short)
    assert abs(sum(fractions) / len(fractions) - 0.4 * 9 / 10) < 0.05
    assert not torch.equal(steps[0], steps[per_epoch])  # the same rows get new noise the next epoch
    _, plain_steps, _ = _spy_targets(DIGITS_RUN, tmp_path, "plain")
    assert all(torch.equal(y, clean[(i % per_epoch) * 100 : (i % per_epoch + 1) * 100]) for i, y in enumerate(plain_steps))


def test_mixup_trains_end_to_end_on_mixed_one_hot_targets(tmp_path):
    out, steps, clean = _spy_targets({**DIGITS_RUN, "augment": {"mixup": 0.4}}, tmp_path, "mixup")
    y = steps[0]
    assert y.shape == (100, 10) and y.dtype == torch.float32
    torch.testing.assert_close(y.sum(1), torch.ones(100))
    assert int(((y > 0) & (y < 1)).any(1).sum()) > 50  # most rows are mixtures of two labels
    truth = torch.nn.functional.one_hot(clean[:100], 10).bool()
    assert bool((y[truth] >= 0).all()) and int((y[truth] > 0).sum()) >= 95  # each row keeps a share of its own label
    assert out.summary["status"] == "complete" and out.metrics["test"]["accuracy"] > 0.2  # learning (chance: 0.1)


def test_training_accuracy_on_mixed_targets_counts_the_class_with_the_larger_share():
    from mlptrain.engine import Loop, Step, Task
    from mlptrain.regularizers import Part
    from mlptrain.state import Sums

    eye = torch.eye(3)
    mixed = torch.stack([0.7 * eye[0] + 0.3 * eye[1], 0.4 * eye[0] + 0.6 * eye[2], 0.9 * eye[2] + 0.1 * eye[1],
                         0.55 * eye[1] + 0.45 * eye[0]])  # dominant classes 0, 2, 2, 1

    class Mixed(Part):
        name, soft_targets = "mixed", True

        def batch(self, x, y):
            return x, mixed

    model = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(eye)  # logits = inputs: the predicted class is each row's argmax
    x = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]])  # predicts 0, 0, 2, 2
    sums = Sums(CPU, 1)
    loop = Loop(epochs=1, batch_size=None, parts=[Mixed()])
    step = Step(model, model, torch.nn.functional.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.0), loop, CPU,
                None, None, sums, Task("multiclass", 3))
    step(x, torch.zeros(4, dtype=torch.long), 4)
    assert float(sums.correct) == 2  # rows 0 and 2: their predictions are their mixtures' larger shares


@pytest.mark.parametrize("config, part", [("label_noise", "label_noise"), ("mixup", "mixup"), ("augment", "augment")])
def test_each_regularization_config_names_its_seed_and_trains_with_its_part(config, part, tmp_path, capsys):
    from conftest import CONFIGS
    from mlptrain.cli import main

    path = CONFIGS / "regularization" / f"{config}.yaml"
    assert "_" in path.read_text().split(".txt")[0] and "TensorBoard:" in path.read_text()  # the seed file, what to look at
    assert main(["validate", str(path)]) == 0
    assert f"step: parts {part}; backprop manual" in capsys.readouterr().out
    assert main(["fit", str(path), "--run-dir", str(tmp_path / "run"), "--set", "train.epochs=2"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["backprop"] == "manual" and "test" in summary["metrics"]


def _event_images(run_dir) -> dict[str, Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for path in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"images": 0})
        acc.Reload()
        found.update({tag: acc.Images(tag) for tag in acc.Tags()["images"]})
    return found


def test_tensorboard_shows_what_augment_does_and_training_draws_as_without_the_picture(tmp_path):
    """augment/examples: the first training images as read, then two augmented draws of each. The picture
    draws from a generator of its own: the run's weights are those of the same run without TensorBoard."""
    import io

    import numpy as np
    from PIL import Image

    from mlptrain import checkpoint

    raw = {**DIGITS_RUN, "augment": {"rotate": 15.0, "crop": 1}, "train": {**DIGITS_RUN["train"], "epochs": 1}}
    state = pipeline.build(validate_dict(raw, "t")).prepared  # standardized rows: the picture shows pixels
    scaler = state.state["scaler"]
    first = (state.train.x[0] * np.asarray(scaler["scale"]) + np.asarray(scaler["shift"])).reshape(8, 8)
    runs = {}
    for board in (True, False):
        spec = validate_dict({**raw, "logging": {"tensorboard": board, "progress": "none"}}, "t")
        runs[board] = pipeline.train(spec, pipeline.start_run(spec, None, tmp_path / str(board)), "cpu").run_dir
    shown = _event_images(runs[True])["augment/examples"]
    assert len(shown) == 1
    picture = np.asarray(Image.open(io.BytesIO(shown[0].encoded_image_string)).convert("L"), np.float32) / 255
    cell = 8 * 3 + 2  # digits drawn 3x as large, a 1-pixel frame around each
    assert picture.shape == (3 * cell, 8 * cell)
    rows = [picture[i * cell + 1:(i + 1) * cell - 1] for i in range(3)]
    np.testing.assert_allclose(rows[0][::3, 1:25:3], first, atol=1 / 255 + 1e-6)  # the top row: the image as read
    assert np.abs(rows[1] - rows[0]).max() > 0.2 and np.abs(rows[2] - rows[1]).max() > 0.2  # two other draws
    weights = [checkpoint.load(d / "checkpoints" / "last.pt")["model"] for d in (runs[True], runs[False])]
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=0, atol=0)
    spec = validate_dict({**DIGITS_RUN, "logging": {"tensorboard": True, "progress": "none"}}, "t")
    plain = pipeline.train(spec, pipeline.start_run(spec, None, tmp_path / "plain"), "cpu").run_dir
    assert "augment/examples" not in _event_images(plain)
