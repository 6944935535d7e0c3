"""What a run leaves for TensorBoard at its end: the final model's metrics, read by the HParams tab
from the run's final/ run without single-point cards among the training curves, and the
confusion matrices and PR curves of classification."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlptrain import pipeline
from mlptrain.config import validate_dict

EPOCHS = 4


def _fit(tmp_path: Path, name: str = "run", **sections: Any) -> pipeline.FitOutcome:
    raw: dict[str, Any] = {
        "name": "t",
        "data": {"name": "moons", "n_samples": 120},
        "model": {"hidden": [8]},
        "train": {"epochs": EPOCHS, "batch_size": 32, "device": "cpu", "early_stopping": {"patience": 50}},
        "logging": {"tensorboard": True, "progress": "none", "histograms_every": 0},
    }
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
    spec = validate_dict(raw)
    return pipeline.train(spec, pipeline.start_run(spec, None, tmp_path / name), "cpu")


def _events(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0, "histograms": 0})
    acc.Reload()
    return acc


def _session_metrics(logdir: Path) -> dict[str, dict[str, float]]:
    """What TensorBoard's HParams tab shows: {session: {metric tag: value}}, by the plugin's own code."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    backend = backend_context.Context(base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider))
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100, allowed_statuses=[api_pb2.STATUS_SUCCESS])
    response = list_session_groups.Handler(context.RequestContext(), backend, "", request).run()
    return {g.name: {m.name.tag: m.value for m in g.metric_values} for g in response.session_groups}


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    return _fit(tmp_path_factory.mktemp("tb"))


def test_the_training_curves_have_no_single_point_cards_among_them(binary_run):
    out = binary_run
    scalars = _events(out.run_dir).Tags()["scalars"]
    assert {"train/loss", "val/loss", "val/accuracy", "lr"} <= set(scalars)
    for tag in scalars:  # a point per epoch (or per step): no hparam/... or other one-point cards
        assert len(_events(out.run_dir).Scalars(tag)) >= EPOCHS, tag
    assert not any(tag.startswith("hparam") for tag in scalars + _events(out.run_dir / "final").Tags()["scalars"])


def test_the_final_metrics_are_the_final_runs_scalars_at_the_last_epoch(binary_run):
    out = binary_run
    curves = set(_events(out.run_dir).Tags()["scalars"])
    final = _events(out.run_dir / "final")
    expected = {f"{split}/{k}" for split in ("val", "test") for k in out.metrics[split]} | {"train/loss", "train/accuracy"}
    assert set(final.Tags()["scalars"]) == expected  # train/f1 and the like: no curve, so only in summary.json
    for tag in expected:
        split, metric = tag.split("/")
        [event] = final.Scalars(tag)
        assert event.step == EPOCHS and event.value == pytest.approx(out.metrics[split][metric], rel=1e-6)
        assert split == "test" or tag in curves  # a dot beside its curve's end; test/... are the only new cards


def test_the_hparams_tab_shows_the_config_and_the_final_metrics(binary_run, tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = binary_run
    content = _events(out.run_dir / "final").PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["data.name"].string_value == "moons" and start.hparams["train.epochs"].number_value == EPOCHS
    assert not any(k.startswith("logging.") for k in start.hparams)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == set(_events(out.run_dir / "final").Tags()["scalars"])
    expected = {f"{s}/{k}": v for s, m in out.metrics.items() for k, v in m.items() if s != "train" or k in ("loss", "accuracy")}
    # as TensorBoard reads them: with the run's parent as logdir, and with the run directory itself
    for logdir, session in ((out.run_dir.parent, f"{out.run_dir.name}/final"), (out.run_dir, "final")):
        shown = _session_metrics(logdir)
        assert list(shown) == [session]
        assert shown[session] == pytest.approx(expected, rel=1e-6)


def _image(acc, tag: str) -> np.ndarray:
    from PIL import Image

    [event] = acc.Images(tag)
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def _pr_counts(acc, tag: str) -> np.ndarray:
    """A PR curve's [TP, FP, TN, FN, precision, recall] x thresholds."""
    from tensorboard.util import tensor_util

    [event] = acc.Tensors(tag)
    return tensor_util.make_ndarray(event.tensor_proto)


def test_binary_runs_draw_a_confusion_matrix_and_the_positive_class_pr_curve_per_split(binary_run):
    out = binary_run
    final = _events(out.run_dir / "final")
    assert sorted(final.Tags()["images"]) == ["test/confusion_matrix", "val/confusion_matrix"]
    for split in ("val", "test"):
        image = _image(final, f"{split}/confusion_matrix")
        assert image.shape[2] == 3 and 200 <= image.shape[0] <= 900 and 200 <= image.shape[1] <= 900
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 8  # drawn, not blank
    names = pipeline.restore(out.checkpoint, "cpu")[0].built.prepared.state["class_names"]
    assert sorted(final.PluginTagToContent("pr_curves")) == [f"test/pr_curve/{names[1]}", f"val/pr_curve/{names[1]}"]
    for split in ("val", "test"):
        result = pipeline.evaluate_checkpoint(out.checkpoint, split, device_name="cpu")
        cm = np.array(result["confusion_matrix"])
        tp, fp, tn, fn = _pr_counts(final, f"{split}/pr_curve/{names[1]}")[:4, 0]  # threshold 0: everything positive
        assert (tp + fn, fp + tn) == (cm[1].sum(), cm[0].sum())  # the split's rows of each class


def test_multiclass_runs_draw_per_class_pr_curves_up_to_ten_classes(tmp_path):
    three = _fit(tmp_path, "three", data={"name": "blobs", "n_samples": 150, "n_classes": 3, "split": {"test": 0.0}})
    final = _events(three.run_dir / "final")
    assert final.Tags()["images"] == ["val/confusion_matrix"]  # no test split, no test picture
    names = pipeline.restore(three.checkpoint, "cpu")[0].built.prepared.state["class_names"]
    assert sorted(final.PluginTagToContent("pr_curves")) == sorted(f"val/pr_curve/{n}" for n in names)
    cm = np.array(pipeline.evaluate_checkpoint(three.checkpoint, "val", device_name="cpu")["confusion_matrix"])
    for i, name in enumerate(names):  # class i against the rest: its rows are the positives
        tp, fp, tn, fn = _pr_counts(final, f"val/pr_curve/{name}")[:4, 0]
        assert tp + fn == cm[i].sum() and tp + fp + tn + fn == cm.sum()

    twelve = _fit(tmp_path, "twelve", data={"name": "blobs", "n_samples": 360, "n_classes": 12})
    final = _events(twelve.run_dir / "final")
    assert sorted(final.Tags()["images"]) == ["test/confusion_matrix", "val/confusion_matrix"]
    assert final.Tags()["tensors"] == []  # 12 classes: no PR curves


def test_regression_runs_log_the_final_metrics_and_no_pictures(tmp_path):
    out = _fit(tmp_path, data={"name": "sine", "n_samples": 120})
    final = _events(out.run_dir / "final")
    assert final.Tags()["images"] == [] and not final.Tags()["tensors"]
    assert {"test/r2", "val/r2", "train/loss"} <= set(final.Tags()["scalars"])
    assert final.Scalars("test/r2")[0].value == pytest.approx(out.metrics["test"]["r2"], rel=1e-6)
