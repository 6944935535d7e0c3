"""Adversarial examples (mlptrain.attacks), adversarial training (the `adversarial` step part),
`eval --attack` and MC dropout (`eval/predict --mc-dropout`).

The tool's FGSM is checked against a hand computation on logistic regression, where the input
gradient is written out: ∇ₓJ ∝ w·(σ(z) − y) per row (softmax: Wᵀ(p − onehot(y))).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from imagefiles import write_idx, write_mnist
from mlptrain import attacks, checkpoint, pipeline
from mlptrain.cli import main
from mlptrain.config import load_spec, read_yaml, validate_dict
from mlptrain.data.sources import bundled
from mlptrain.errors import CheckpointError
from test_resume import _interrupted, _resume, _run, assert_same_run

from conftest import CONFIGS

QUIET = {"tensorboard": False, "progress": "none"}
LOGISTIC = {
    "data": {"name": "breast_cancer", "split": {"val": 0.2, "test": 0.2, "seed": 0}},
    "model": {"hidden": []},
    "optimizer": {"name": "adam", "lr": 0.05},
    "train": {"epochs": 5, "batch_size": 64, "early_stopping": {"enabled": False}},
    "logging": QUIET,
}
BLOBS = {"name": "blobs", "n_samples": 300, "n_classes": 3, "n_features": 4, "noise": 1.5, "seed": 2}
DROPOUT_NET = {
    "data": BLOBS,
    "model": {"hidden": [32, 32], "dropout": 0.3},
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 6, "batch_size": 32, "seed": 4, "early_stopping": {"enabled": False}},
    "logging": {**QUIET, "step_every": 3},
}


def _with(raw: dict[str, Any], **sections: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for key, value in sections.items():
        out[key] = {**out.get(key, {}), **value}
    return out


def _checkpoint(raw: dict[str, Any], tmp_path: Path, name: str) -> Path:
    return _run(raw, tmp_path, name).run_dir / "checkpoints" / "last.pt"


def _eval_json(argv: list[str], capsys: Any) -> dict[str, Any]:
    assert main(["eval", *argv, "--json", "--device", "cpu"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _refused(argv: list[str], capsys: Any) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return code, err


# ------------------------------------------------------------------------------------------------
# The attack maths against hand computations.


def _logistic_by_hand(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FGSM's sign of ∇ₓ BCE(σ(x·w + b), y) per row, and the perturbed rows x + step·sign."""
    z = x.astype(np.float64) @ w.astype(np.float64) + b
    sign = np.sign(w[None, :] * (1 / (1 + np.exp(-z)) - y)[:, None])
    return sign, (x + (step * sign).astype(np.float32)).astype(np.float32)


@pytest.mark.parametrize("scale", ["standard", "minmax"])
def test_fgsm_equals_the_hand_computation_on_logistic_regression(scale, tmp_path, capsys):
    """Standardized features: ε standard deviations are ε model units; min-max scaled ones: ε·std/range."""
    raw = _with(LOGISTIC, data={"scale": scale})
    path = _checkpoint(raw, tmp_path, "run")
    restored, _ = pipeline.restore(path, "cpu")
    built = restored.built
    test, train = built.prepared.test, built.prepared.train
    w = built.model.output.weight.detach().numpy()[0]
    b = float(built.model.output.bias.detach()[0])
    y = test.y.reshape(-1).astype(np.float64)
    eps = 0.3
    unit = np.ones(train.x.shape[1]) if scale == "standard" else train.x.astype(np.float64).std(axis=0)
    sign, by_hand = _logistic_by_hand(test.x, y, w, b, eps * unit)
    assert (sign != 0).all()
    where = attacks.space(built.prepared.state, torch.device("cpu"))
    tool = attacks.fgsm(built.model, built.loss_fn, torch.from_numpy(test.x), torch.from_numpy(test.y), eps, where).numpy()
    if scale == "standard":
        np.testing.assert_array_equal(tool, by_hand)  # exactly: δ = ε·sign(w·(σ(z) − y))
    else:
        np.testing.assert_allclose(tool, by_hand, rtol=0, atol=1e-6)
    # and eval --attack scores those very rows
    z_adv = by_hand.astype(np.float64) @ w + b
    p = 1 / (1 + np.exp(-z_adv))
    got = _eval_json([str(path), "--attack", "fgsm", "--epsilon", f"0.1,{eps}"], capsys)
    row = got["robustness"][-1]
    assert row["epsilon"] == eps
    assert row["accuracy"] == pytest.approx(float(((z_adv > 0) == (y == 1)).mean()), abs=0)
    assert row["loss"] == pytest.approx(float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()), rel=1e-5)
    assert got["robustness"][0] == {"epsilon": 0.0, "accuracy": got["metrics"]["accuracy"], "loss": got["metrics"]["loss"]}
    assert got["attack"]["units"] == attacks.STDS


def test_one_hot_columns_are_not_perturbed(tmp_path):
    """A tabular model's categorical and bool columns keep their 0/1 values; numeric ones move by ε std devs."""
    rng = np.random.default_rng(0)
    n = 120
    lines = ["a,b,colour,flag,y"] + [
        f"{rng.normal(5, 2):.3f},{rng.normal(0, 10):.3f},{rng.choice(['red', 'blue', 'green'])},{rng.choice(['true', 'false'])},{i % 2}"
        for i in range(n)
    ]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    raw = _with(LOGISTIC, data={"name": "csv", "path": str(tmp_path / "t.csv"), "target": "y", "split": {"val": 0.2, "test": 0.2}})
    restored, _ = pipeline.restore(_checkpoint(raw, tmp_path, "run"), "cpu")
    built = restored.built
    names = built.prepared.state["tabular"]["encoded_names"]
    x, y = torch.from_numpy(built.prepared.test.x), torch.from_numpy(built.prepared.test.y)
    moved = (attacks.fgsm(built.model, built.loss_fn, x, y, 0.5, attacks.space(built.prepared.state, x.device)) - x).abs()
    for j, name in enumerate(names):
        if name in ("a", "b"):
            torch.testing.assert_close(moved[:, j], torch.full_like(moved[:, j], 0.5))  # standardized: 0.5 std devs
        else:
            assert (moved[:, j] == 0).all(), name


def _images(tmp_path: Path, scale: str) -> tuple[Any, torch.Tensor, torch.Tensor]:
    write_mnist(tmp_path / "img", n_train=60, n_test=30, size=8)
    spec = validate_dict({"data": {"name": "mnist", "root": str(tmp_path / "img"), "scale": scale}, "model": {"hidden": []}})
    built = pipeline.build(spec)
    return built, torch.from_numpy(built.prepared.test.x), torch.from_numpy(built.prepared.test.y)


@pytest.mark.parametrize("scale", ["standard", "none"])
def test_fgsm_on_images_moves_pixels_by_epsilon_and_clips_them_to_0_1(scale, tmp_path):
    """Unscaled to pixels, the adversarial image is clip(pixels + ε·sign(Wᵀ(p − onehot(y))), 0, 1)."""
    built, x, y = _images(tmp_path, scale)
    state = built.prepared.state
    shift, step = (np.asarray(state["scaler"]["shift"]), np.asarray(state["scaler"]["scale"])) if scale != "none" else (0.0, 1.0)
    pixels = x.numpy().astype(np.float64) * step + shift
    w, b = built.model.output.weight.detach().double().numpy(), built.model.output.bias.detach().double().numpy()
    z = x.numpy().astype(np.float64) @ w.T + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    sign = np.sign((p - np.eye(10)[y.numpy()]) @ w)  # the pixel gradient has the model input's sign (scale > 0)
    eps = 0.2
    by_hand = np.clip(pixels + eps * sign, 0, 1)
    adv = attacks.fgsm(built.model, built.loss_fn, x, y, eps, attacks.space(state, x.device)).numpy().astype(np.float64)
    np.testing.assert_allclose(adv * step + shift, by_hand, rtol=0, atol=1e-5)
    assert ((pixels + eps * sign > 1) | (pixels + eps * sign < 0)).any()  # the clipping was needed


def test_pgd_stays_in_the_epsilon_ball_and_does_at_least_the_damage_of_fgsm(tmp_path, capsys):
    built, x, y = _images(tmp_path, "standard")
    where = attacks.space(built.prepared.state, x.device)
    torch.manual_seed(0)
    eps = 0.1
    adv = attacks.pgd(built.model, built.loss_fn, x, y, eps, where, 10, 0.025, torch.Generator().manual_seed(0))
    assert ((adv - x).abs() <= eps * where.unit * (1 + 1e-6)).all()
    assert (adv >= where.low).all() and (adv <= where.high).all() and not torch.equal(adv, x)
    # on a trained net, through eval: PGD hurts at least as much as FGSM at every ε
    path = _checkpoint(DROPOUT_NET, tmp_path, "run")
    eps_list = "0.05,0.1,0.3"
    fgsm = _eval_json([str(path), "--attack", "fgsm", "--epsilon", eps_list], capsys)["robustness"]
    pgd = _eval_json([str(path), "--attack", "pgd", "--epsilon", eps_list, "--steps", "10"], capsys)["robustness"]
    for f, g in zip(fgsm[1:], pgd[1:]):
        assert g["loss"] >= f["loss"] and g["accuracy"] <= f["accuracy"], (f, g)
    assert pgd[-1]["accuracy"] < pgd[0]["accuracy"]


def test_a_checkpoint_without_feature_std_is_refused_for_attacks(tmp_path):
    state = {"scaler": {"kind": "standard", "shift": [0.0], "scale": [1.0]}}
    with pytest.raises(CheckpointError, match="train it again"):
        attacks.space(state, torch.device("cpu"), "old.pt")


# ------------------------------------------------------------------------------------------------
# Adversarial training.


def test_adversarial_training_changes_the_weights(tmp_path):
    plain = _run(DROPOUT_NET, tmp_path, "plain")
    adv = _run(_with(DROPOUT_NET, adversarial={"method": "fgsm", "epsilon": 0.3}), tmp_path, "adv")
    a = checkpoint.load(plain.run_dir / "checkpoints" / "last.pt")["model"]
    b = checkpoint.load(adv.run_dir / "checkpoints" / "last.pt")["model"]
    assert not any(torch.equal(a[k], b[k]) for k in a)
    assert adv.summary["backprop"] == "autograd" and plain.summary["backprop"] == "manual"  # auto steps aside, and says so


def test_the_step_minimizes_and_logs_what_the_objective_point_returns():
    """A part's objective is the loss differentiated and logged as train/loss: here one with the clean
    loss's gradient whose value is 10, so the weights are plain training's and every epoch logs 10."""
    from mlptrain.config import SchedulerSpec
    from mlptrain.engine import Loop, Task, fit
    from mlptrain.optim import LRSchedule
    from mlptrain.regularizers import Part

    class Ten(Part):
        name = "augment"  # (a declared name: the loop asks plan.PARTS about it)

        def objective(self, loss: torch.Tensor, x: torch.Tensor, y: torch.Tensor, net: Any) -> torch.Tensor:
            return loss - loss.detach() + 10.0

    def trained(parts: list[Part]) -> tuple[torch.nn.Module, Any]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        x, y = torch.randn(64, 3), torch.randint(0, 2, (64, 1)).float()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loop = Loop(epochs=2, batch_size=16, early_stopping=False, restore_best_weights=False, monitor="train/loss", save_best=False,
                    save_last=False, parts=parts)
        result = fit(model, torch.nn.functional.binary_cross_entropy_with_logits, opt,
                     LRSchedule(opt, SchedulerSpec(), 2, "min"), (x, y), None, Task("binary", 2), loop)
        return model, result

    (a, plain), (b, ten) = trained([]), trained([Ten()])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert [row["train/loss"] for row in ten.history] == [10.0, 10.0]
    assert [row["train/accuracy"] for row in ten.history] == [row["train/accuracy"] for row in plain.history]


def test_the_objective_mixes_clean_and_adversarial_losses_by_weight():
    from mlptrain.config import AdversarialSpec
    from mlptrain.regularizers import Adversarial, Net

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    loss_fn = torch.nn.functional.cross_entropy
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    where = attacks.Space(torch.ones(3))
    part = Adversarial(AdversarialSpec(method="fgsm", epsilon=0.2, weight=0.3), where)
    clean = loss_fn(model(x), y)
    mixed = part.objective(clean, x, y, Net(model, model, loss_fn))
    expected = 0.7 * clean + 0.3 * loss_fn(model(attacks.fgsm(model, loss_fn, x, y, 0.2, where)), y)
    torch.testing.assert_close(mixed, expected)


@pytest.mark.parametrize("method", [{"method": "pgd", "epsilon": 0.3, "steps": 3}, {"method": "fgsm", "epsilon": 0.3}],
                         ids=["pgd-random-start", "fgsm"])
def test_adversarial_training_resumes_bit_identically(method, tmp_path):
    raw = _with(DROPOUT_NET, adversarial=method)
    whole = _run(raw, tmp_path, "whole")
    path = _interrupted(raw, tmp_path, "stopped", 13)
    assert_same_run(whole.run_dir, path, whole, _resume(path))


# ------------------------------------------------------------------------------------------------
# eval --attack and --mc-dropout.


def test_eval_attack_prints_one_table_of_clean_and_adversarial_rows(tmp_path, capsys):
    path = _checkpoint(DROPOUT_NET, tmp_path, "run")
    assert main(["eval", str(path), "--attack", "pgd", "--epsilon", "0.05,0.1", "--steps", "3", "--split", "val"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("robustness: pgd, 3 steps"):]
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows[:3]] == ["clean", "0.05", "0.1"]
    got = _eval_json([str(path), "--attack", "pgd", "--epsilon", "0.05,0.1", "--steps", "3", "--split", "val"], capsys)
    assert [r["epsilon"] for r in got["robustness"]] == [0.0, 0.05, 0.1]
    assert got["attack"] == {"method": "pgd", "units": attacks.STDS, "steps": 3, "step_size": "2.5·ε/steps",
                             "random_start": True, "seed": 0}
    printed = [r.split("│")[2].strip() for r in rows[:3]]
    assert printed == [f"{r['accuracy']:.4f}" for r in got["robustness"]]


def _mc_by_hand(model: torch.nn.Module, x: torch.Tensor, passes: int, seed: int) -> np.ndarray:
    """The mean of ``passes`` softmax outputs with dropout on, drawn from torch's generator seeded with ``seed``."""
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.train()
    torch.manual_seed(seed)
    with torch.no_grad():
        return torch.stack([torch.softmax(model(x), dim=1) for _ in range(passes)]).mean(0).double().numpy()


def test_mc_dropout_averages_n_seeded_passes_beside_weight_scaling(tmp_path, capsys):
    path = _checkpoint(DROPOUT_NET, tmp_path, "run")
    restored, _ = pipeline.restore(path, "cpu")
    test = restored.built.prepared.test
    scaler = restored.built.prepared.state["scaler"]
    np.savez(tmp_path / "in.npz", x=test.x * np.asarray(scaler["scale"]) + np.asarray(scaler["shift"]))  # as read: predict scales it

    def predicted(name: str, *flags: str) -> np.ndarray:
        assert main(["predict", str(path), str(tmp_path / "in.npz"), "-o", str(tmp_path / name), "--device", "cpu", *flags]) == 0
        capsys.readouterr()
        cols = np.load(tmp_path / name)
        return np.stack([cols[f"prob_{c}"].astype(np.float64) for c in restored.built.prepared.state["class_names"]], axis=1)

    plain = predicted("plain.npz")
    mc = predicted("mc.npz", "--mc-dropout", "7", "--seed", "3")
    np.testing.assert_allclose(mc, _mc_by_hand(restored.built.model, torch.from_numpy(test.x), 7, 3), rtol=0, atol=1e-6)
    assert not np.allclose(mc, plain, atol=1e-4)
    np.testing.assert_array_equal(predicted("again.npz", "--mc-dropout", "7", "--seed", "3"), mc)
    assert not np.array_equal(predicted("other.npz", "--mc-dropout", "7", "--seed", "4"), mc)
    # eval prints both sets of metrics; --json holds them
    got = _eval_json([str(path), "--mc-dropout", "7", "--seed", "3"], capsys)
    assert got["mc_dropout"]["passes"] == 7 and got["mc_dropout"]["metrics"]["loss"] != got["metrics"]["loss"]
    y = test.y.reshape(-1)
    assert got["mc_dropout"]["metrics"]["accuracy"] == pytest.approx(float((mc.argmax(1) == y).mean()), abs=0)
    assert main(["eval", str(path), "--mc-dropout", "7", "--device", "cpu"]) == 0
    assert "MC dropout ×7" in capsys.readouterr().out


def test_refusals_are_one_line_with_the_cli_exit_code(tmp_path, write_config, capsys):
    dropout = _checkpoint(DROPOUT_NET, tmp_path, "run")
    plain = _checkpoint(_with(DROPOUT_NET, model={"dropout": 0.0}), tmp_path, "plain")
    regression = _checkpoint({**DROPOUT_NET, "data": {"name": "sine", "n_samples": 100}}, tmp_path, "sine")
    cases = [
        (["eval", str(regression), "--attack", "fgsm", "--epsilon", "0.1"], "needs a binary or multiclass model"),
        (["eval", str(dropout), "--attack", "fgsm", "--epsilon", "0.1", "--steps", "3"], "--steps is for --attack pgd"),
        (["eval", str(dropout), "--epsilon", "0.1"], "--epsilon needs --attack"),
        (["eval", str(dropout), "--attack", "fgsm"], "--attack needs --epsilon"),
        (["eval", str(dropout), "--attack", "bim", "--epsilon", "0.1"], "not one of fgsm, pgd"),
        (["eval", str(dropout), "--attack", "fgsm", "--epsilon", "0.1,-1"], "'-1' is not a positive number"),
        (["eval", str(dropout), "--attack", "fgsm", "--epsilon", "0.1,x"], "'x' is not a positive number"),
        (["eval", str(dropout), "--mc-dropout", "1"], "--mc-dropout"),
        (["eval", str(plain), "--mc-dropout", "5"], "has no dropout"),
        (["predict", str(plain), str(tmp_path / "x.npz"), "-o", str(tmp_path / "p.csv"), "--mc-dropout", "5"], "has no dropout"),
    ]
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 4), np.float32))
    for argv, words in cases:
        code, err = _refused([*argv, "--device", "cpu"], capsys)
        assert code == 2 and words in err, (argv, err)
    for text, words in (
        ("adversarial: {method: fgsm}\n", "needs adversarial.epsilon"),
        ("adversarial: {method: fgsm, epsilon: 0.1, steps: 5}\n", "adversarial.steps = 5 changes nothing"),
        ("adversarial: {epsilon: 0.1}\n", "adversarial.epsilon = 0.1 changes nothing with no adversarial.method"),
        ("adversarial: {method: pgd, epsilon: 0.1}\ntrain: {backprop: manual}\n", "does not cover adversarial"),
    ):
        code, err = _refused(["validate", str(write_config("data: {name: moons}\n" + text))], capsys)
        assert code == 2 and words in err, (text, err)


# ------------------------------------------------------------------------------------------------
# The robustness check, with the shipped config.


def _digit_pixels(directory: Path) -> Path:
    """digits as an image set of its own (pixels 0-16 read as [0, 1]), in the MNIST files' format."""
    table = bundled("digits")
    images = np.rint(table.x.reshape(-1, 8, 8) * 255 / 16).astype(np.uint8)
    labels = np.asarray([int(v) for v in table.y], dtype=np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    for stem, rows in (("train", order[270:]), ("t10k", order[:270])):
        write_idx(directory / f"{stem}-images-idx3-ubyte.gz", images[rows])
        write_idx(directory / f"{stem}-labels-idx1-ubyte.gz", labels[rows])
    return directory


def test_fgsm_training_on_digit_pixels_resists_fgsm_at_epsilon_0_1(tmp_path, capsys):
    """configs/regularization/adversarial.yaml, on digits as pixels in [0, 1]: at ε = 0.1 its FGSM accuracy
    is at least 20 points above the same net trained without it, its clean accuracy within 2 points."""
    shipped = CONFIGS / "regularization" / "adversarial.yaml"
    assert load_spec(shipped).adversarial.method == "fgsm"  # it loads as users load it: no key that changes nothing
    raw = read_yaml(shipped)
    if "image_shape" not in pipeline.build(validate_dict(raw)).prepared.state:  # digits read as features: its pixels as images
        raw["data"] = {"name": "mnist", "root": str(_digit_pixels(tmp_path / "digits")), "split": {"val": 0.15, "seed": 0}}
    raw["logging"] = {**raw.get("logging", {}), **QUIET}
    raw["train"] = {**raw["train"], "threads": 1}  # one thread: two oversubscribe a loaded 2-core machine
    plain = {k: v for k, v in raw.items() if k != "adversarial"}
    scores = {}
    for name, spec in (("plain", plain), ("fgsm", raw)):
        path = _run(spec, tmp_path, name).checkpoint
        scores[name] = _eval_json([str(path), "--attack", "fgsm", "--epsilon", "0.1"], capsys)["robustness"]
    assert scores["fgsm"][0]["accuracy"] >= scores["plain"][0]["accuracy"] - 0.02, scores
    assert scores["fgsm"][1]["accuracy"] >= scores["plain"][1]["accuracy"] + 0.20, scores
