"""The command line: Typer commands that call ``pipeline`` and print what comes back.

This is the only module that prints errors or exits: an ``MlptrainError`` becomes one line on
stderr and its exit code (``--debug`` shows the traceback). Heavy imports (torch, sklearn) happen
inside the commands so ``mlptrain --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from mlptrain.errors import ConfigError, Interrupted, MlptrainError, RunDirError
from mlptrain.runs import RESUMABLE

# Typer re-exports click's errors under its own names; newer Typer vendors click, older ones import it.
ClickException: type[Exception] = typer.BadParameter.__mro__[2]


class _NamedOption(TyperOption):
    """An option in --help as click and other Typer tools show it: a flag alone (``--json``), a value by
    its name (``--set KEY=VALUE``, ``--device DEVICE``) rather than its Python type (``<list[str]>``)."""

    def display_type_rich(self, ctx: Any) -> Optional[str]:
        return None if self.is_flag else (self.metavar or self.name.upper())


class _NamedArgument(TyperArgument):
    """An argument in --help by its name alone: ``CHECKPOINT``, ``[CONFIG]`` when optional (not
    ``{CHECKPOINT} <path>``)."""

    def display_type_rich(self, ctx: Any) -> Optional[str]:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"


def _named(params: list[Any]) -> list[Any]:
    """Typer builds its parameters itself, with no hook for their class: give them the named help here."""
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _NamedOption
        elif type(param) is TyperArgument:
            param.__class__ = _NamedArgument
    return params


class NamedHelpCommand(TyperCommand):
    """A command whose --help names values (``_NamedOption``, ``_NamedArgument``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _named(super().get_params(ctx))


class NamedHelpGroup(TyperGroup):
    """The ``mlptrain`` group, with the same help as its commands."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _named(super().get_params(ctx))


app = typer.Typer(
    name="mlptrain",
    cls=NamedHelpGroup,
    help="Train multi-layer perceptrons from one YAML file.\n\nStart with `mlptrain init my.yaml`, then `mlptrain fit my.yaml`.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def command_name() -> str:
    """mlptrain as this process was started, to print commands the user can paste: ``mlptrain`` when
    PATH finds that very script, else the script as typed (``.venv/bin/mlptrain``), or ``python -m mlptrain``."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main_spec is not None and main_spec.name == "mlptrain.__main__":
        return f"{_as_typed(sys.executable)} -m mlptrain"
    script = sys.argv[0] if sys.argv else ""
    return _as_typed(script) if Path(script).name == "mlptrain" else "mlptrain"  # else: called in-process (tests)


def _as_typed(program: str) -> str:
    """The shortest text that runs ``program`` from here: its bare name when PATH leads to that path,
    else the path (relative when below the working directory), quoted for the shell if need be."""
    import shlex
    import shutil

    path = Path(program)
    found = shutil.which(path.name)
    # the same path, not just the same file: a venv's python links to the base one, which lacks the venv's packages
    if found and os.path.normpath(os.path.abspath(found)) == os.path.normpath(os.path.abspath(path)):
        return path.name
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    text = str(path) if path.is_absolute() or len(path.parts) > 1 else f"./{path}"
    return shlex.quote(text)


def fmt(value: Any) -> str:
    """One format for every metric `fit` and `eval` print, so they can be compared digit by digit."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _print_version(asked: bool) -> None:
    """``mlptrain --version``: the installed package's version, without importing torch."""
    if not asked:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("mlptrain")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from mlptrain import __version__ as number
    out.print(f"mlptrain {number}", markup=False)
    raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Global options (read by ``main``)."""


# ------------------------------------------------------------------------------------------------
# Progress: a live bar on a terminal, one plain line per epoch elsewhere.


def watched(values: dict[str, float], monitor: str) -> list[str]:
    """The validation metrics an epoch's progress shows: the task's main one (val/accuracy, val/rmse) and
    the monitored one, as Keras shows its compiled metrics beside the loss."""
    from mlptrain.tasks import main_metric

    return [k for k in dict.fromkeys([main_metric(values), monitor]) if k in values]


class PlainProgress:
    """One line per epoch: what CI logs and pipes want."""

    def __init__(self, monitor: str):
        self.monitor = monitor

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs = epochs

    def advance(self, steps: int, loss: Optional[float]) -> None:
        pass

    def end_epoch(self, epoch: int, values: dict[str, float], improved: bool) -> None:
        keys = [k for k in ("train/loss", "train/accuracy", "val/loss", *watched(values, self.monitor)) if k in values]
        shown = "  ".join(f"{k} {fmt(values[k])}" for k in dict.fromkeys(keys)) + f"  lr {values['lr']:.3g}"
        # print, not rich: a plain line needs no markup or layout, and rich took 0.4 ms of each epoch
        print(f"epoch {epoch:>{len(str(self.epochs))}}/{self.epochs}  {shown}{'  *' if improved else ''}", flush=True)


class BarProgress:
    """A rich progress bar over all steps, showing the running loss, the task's main metric and the monitored one."""

    def __init__(self, monitor: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.monitor = monitor
        self.bar = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[metric]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=out, transient=False,
        )
        self.task: Any = None
        self.metric = ""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("fit", total=steps * epochs, epoch=f"{epoch}/{epochs}", loss="-", metric="")
        self.bar.update(self.task, epoch=f"{epoch}/{epochs}")

    def advance(self, steps: int, loss: Optional[float]) -> None:
        self.bar.update(self.task, advance=steps, loss=fmt(loss) if loss is not None else "-")

    def end_epoch(self, epoch: int, values: dict[str, float], improved: bool) -> None:
        self.bar.update(self.task, metric="  ".join(f"{k} {fmt(values[k])}" for k in watched(values, self.monitor)))

    def close(self, finished: bool = False) -> None:
        """Stop the bar; a ``finished`` run's (early stopping included) ends full, at the steps it ran."""
        if self.task is not None:
            if finished:
                done = next(t.completed for t in self.bar.tasks if t.id == self.task)
                self.bar.update(self.task, total=done, completed=done)
            self.bar.stop()


def make_progress(kind: str, monitor: str) -> Any:
    from mlptrain.engine import NoProgress

    if kind == "auto":
        kind = "bar" if out.is_terminal else "plain"
    return {"bar": BarProgress, "plain": PlainProgress}.get(kind, lambda m: NoProgress())(monitor)


def metrics_table(metrics: dict[str, dict[str, float]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for split in metrics:
        table.add_column(split, justify="right")
    names: list[str] = []
    for m in metrics.values():
        names += [k for k in m if k not in names]
    for name in names:
        table.add_row(name, *(fmt(metrics[s].get(name, "")) for s in metrics))
    return table


# ------------------------------------------------------------------------------------------------
# Commands


@app.command(cls=NamedHelpCommand, epilog="Example: mlptrain fit configs/quickstart.yaml --set optimizer.lr=0.01 --set model.hidden=[128,128]")
def fit(
    config: Optional[Path] = typer.Argument(None, metavar="CONFIG", help="YAML spec to train (optional with --resume)."),
    set_: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="Override a value: --set optimizer.lr=0.01 (repeatable)."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="auto | cpu | cuda | cuda:N (overrides train.device)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", metavar="DIR", help="Exact directory for this run (must be new or empty)."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Run name: runs/<name>/<timestamp>/ (default: the config's name)."),
    resume_dir: Optional[Path] = typer.Option(None, "--resume", metavar="RUN_DIR", help="Go on with a stopped run in this directory (as `mlptrain resume`)."),
) -> None:
    """Train a model from a YAML spec: early stopping, checkpoints, metrics.csv, TensorBoard."""
    overrides = list(set_)
    if device:
        overrides.append(f"train.device={device}")
    if resume_dir is not None:
        if run_dir is not None or name:
            raise typer.BadParameter("a resumed run stays in its own directory; drop --run-dir/--name", param_hint="--resume")
        _resume(resume_dir, overrides, config)
        return
    if config is None:
        raise typer.BadParameter("give the YAML spec to train (or --resume RUN_DIR)", param_hint="CONFIG")
    from mlptrain.config import load_spec

    if name:
        overrides.append(f"name={name}")
    spec = load_spec(config, overrides)

    from mlptrain import pipeline
    from mlptrain.runs import existing_ancestor, remove_if_unused

    command = command_name()
    kept = existing_ancestor(pipeline.run_base(spec, None, run_dir))  # there before this call (runs/, an empty --run-dir): it stays
    path = pipeline.start_run(spec, None, run_dir, command)
    out.print(f"run directory: {path}")
    try:
        with naming(config):
            _train(spec, path, run_dir is None, command,
                   lambda progress: pipeline.train(spec, path, spec.train.device, progress, notify=_notify, command=command))
    except BaseException as exc:
        # failed before writing anything (bad data, no CUDA): leave no empty run behind (nor the
        # runs/<name>/ made for it), and say so under the "run directory:" line printed above
        if remove_if_unused(path, keep=kept):
            gone = f"{path} left empty" if kept == path else f"{path} removed"
            if isinstance(exc, MlptrainError):
                exc.args = (f"{exc} (nothing was written: {gone})",)
            elif isinstance(exc, (KeyboardInterrupt, Terminated)):
                err.print(f"stopped before training began: nothing was written ({gone})")
        raise


@app.command(cls=NamedHelpCommand, epilog="Example: mlptrain resume runs/quickstart/2026-01-01_12-00-00 --set train.epochs=200")
def resume(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="The run directory `mlptrain fit` printed (it holds checkpoints/last.pt)."),
    set_: list[str] = typer.Option(
        [], "--set", "-s", metavar="KEY=VALUE", help=f"Change one of {', '.join(RESUMABLE)} (the rest of a run's config stays)."
    ),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="auto | cpu | cuda | cuda:N."),
) -> None:
    """Go on with a stopped run from its last.pt: the very next step, bit for bit as if never stopped."""
    _resume(run_dir, list(set_) + ([f"train.device={device}"] if device else []), None)


@contextlib.contextmanager
def naming(config: Path) -> Any:
    """Config errors found once the data is known (a loss that does not fit its task) name the file too."""
    try:
        yield
    except ConfigError as exc:
        if str(exc).startswith(str(config)):
            raise
        raise ConfigError(f"{config}: {exc}") from exc


def _notify(message: str) -> None:
    err.print(message, markup=False)


def _resume(run_dir: Path, overrides: list[str], config: Optional[Path]) -> None:
    from mlptrain import pipeline

    command = command_name()
    spec, state = pipeline.load_resume(run_dir, overrides, config, command)
    position = state["resume"]["position"]
    where = f"epoch {position['epoch']}, batch {position['batch']}" if position else f"the end of epoch {state['epoch']}"
    out.print(f"run directory: {run_dir}")
    out.print(f"resuming at step {state['step']} ({where})")
    _train(spec, Path(run_dir), False, command,
           lambda progress: pipeline.resume(run_dir, spec, state, None, progress, _notify, command))


def _train(spec: Any, path: Path, named: bool, command: str, go: Any) -> None:
    """Run ``go(progress)`` (a fit or a resume) and print its results and where to look next
    (``command``: how mlptrain was started, see command_name)."""
    from mlptrain.tasks import monitor_key
    from mlptrain.wording import plural

    progress = make_progress(spec.logging.progress, monitor_key(spec.train.early_stopping.monitor))
    finished = False
    try:
        result = go(progress)
        finished = True
    except (KeyboardInterrupt, Terminated):  # outside the epochs' own signal handling: after the last epoch, or before the first
        if (Path(path) / "checkpoints" / "last.pt").is_file():
            err.print(f"stopped before the run was complete; finish it with: {command} resume {path}")
        raise
    finally:
        if hasattr(progress, "close"):
            progress.close(finished)
    s = result.summary
    out.print(metrics_table(result.metrics, f"final metrics ({s['final_weights']} weights, epoch {s['best_epoch'] if s['final_weights'] == 'best' else s['epochs_run']})"))
    stop = "stopped early" if s["stopped_early"] else "ran all epochs"
    precision = f" ({s['precision']})" if s.get("precision", "32") != "32" else ""
    out.print(
        f"{plural(s['epochs_run'], 'epoch')} ({stop}) in {s['train_seconds']:.1f}s (+{s['val_seconds']:.1f}s validating) on {s['device']}{precision}; "
        f"best {s['monitor']} {fmt(s['best_value'])} at epoch {s['best_epoch']}; {s['parameters']} parameters"
    )
    if result.checkpoint is not None:
        split = "" if "test" in result.metrics else next((f" --split {k}" for k in ("val", "train") if k in result.metrics), "")
        out.print(f"checkpoint: {result.checkpoint}")
        out.print(f"evaluate:   {command} eval {result.checkpoint}{split}")
    elif s["final_weights"] == "best":  # restored best weights, and no best.pt
        last = f"; last.pt holds epoch {s['epochs_run']}'s" if spec.train.checkpoint.save_last else ""
        out.print(f"checkpoint: none holds the final weights: they are epoch {s['best_epoch']}'s (early_stopping."
                  f"restore_best_weights) and train.checkpoint.save_best is off{last}")
    else:
        out.print("checkpoint: none holds the final weights (train.checkpoint.save_last is off)")
    if spec.logging.tensorboard:
        logdir = Path(path).parent.parent if named else Path(path)
        out.print(f"TensorBoard: {command} tensorboard {logdir}  (or: tensorboard --logdir {logdir})")


@app.command("eval", cls=NamedHelpCommand, epilog="Example: mlptrain eval runs/quickstart/2026-01-01_12-00-00/checkpoints/best.pt --split test --json")
def eval_(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="A .pt file from a run's checkpoints/ folder."),
    split: str = typer.Option("test", "--split", help="train | val | test: which split of the run's own data."),
    data: Optional[Path] = typer.Option(None, "--data", metavar="FILE", help="A new CSV, Parquet or NPZ file with the training columns (and the target)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON instead of a table."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", help="Also write the metrics as JSON to this file."),
    device: str = typer.Option("auto", "--device", "-d", help="auto | cpu | cuda | cuda:N."),
    attack: Optional[str] = typer.Option(None, "--attack", metavar="fgsm|pgd", help="Also score adversarial examples of the rows (classification)."),
    epsilon: Optional[str] = typer.Option(None, "--epsilon", metavar="E1,E2,...", help="--attack: perturbation sizes, in pixels in [0, 1] or feature standard deviations."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="--attack pgd: projected gradient steps (default 10)."),
    mc_dropout: Optional[int] = typer.Option(None, "--mc-dropout", min=2, metavar="N", help="Also score the mean of N passes with dropout on."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of --mc-dropout's masks and PGD's random start."),
) -> None:
    """Score a checkpoint on a split of its data (or a new file): the same metrics `fit` printed."""
    if split not in ("train", "val", "test"):
        raise typer.BadParameter(f"'{split}' is not one of train, val, test", param_hint="--split")
    from mlptrain import pipeline

    asked = attack_asked(attack, epsilon, steps)
    if output is not None:
        new_file(output, "--output")
    result = pipeline.evaluate_checkpoint(checkpoint, split, data, device, asked, mc_dropout, seed)
    if output is not None:
        from mlptrain.runs import write_output

        write_output(output, (json.dumps(result, indent=2) + "\n").encode("utf-8"))
    if as_json:
        out.print_json(json.dumps(result))
        return
    out.print(f"{result['checkpoint']}  ({result['data']}, {result['rows']} rows, {result['task']})")
    if result.get("positive_class") is not None:
        out.print(positive_class(result["positive_class"]), markup=False)
    label = "data" if data is not None else split
    columns = {label: result["metrics"]}
    if "mc_dropout" in result:
        columns[f"MC dropout ×{result['mc_dropout']['passes']}"] = result["mc_dropout"]["metrics"]
    out.print(metrics_table(columns, "metrics" + (" (weight scaling, beside the mean of dropout passes)" if len(columns) > 1 else "")))
    if "robustness" in result:
        out.print(robustness_table(result["attack"], result["robustness"]))
    cm = result.get("confusion_matrix")
    if cm is not None and len(cm) <= 20:
        table = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
        table.add_column("")
        for name in result["class_names"]:
            table.add_column(str(name), justify="right")
        for name, row in zip(result["class_names"], cm):
            table.add_row(str(name), *(str(v) for v in row))
        out.print(table)


def attack_asked(method: Optional[str], epsilon: Optional[str], steps: Optional[int]) -> Any:
    """eval's --attack, --epsilon and --steps as a pipeline.Attack (None: no attack), refusing what does not fit."""
    from mlptrain.pipeline import Attack

    if method is None:
        for flag, given in (("--epsilon", epsilon), ("--steps", steps)):
            if given is not None:
                raise typer.BadParameter(f"{flag} needs --attack fgsm or --attack pgd", param_hint=flag)
        return None
    if method not in ("fgsm", "pgd"):
        raise typer.BadParameter(f"'{method}' is not one of fgsm, pgd", param_hint="--attack")
    if steps is not None and method == "fgsm":
        raise typer.BadParameter("fgsm takes one step; --steps is for --attack pgd", param_hint="--steps")
    if not epsilon:
        raise typer.BadParameter("--attack needs --epsilon, e.g. --epsilon 0.05,0.1,0.2", param_hint="--epsilon")
    values = []
    for text in epsilon.split(","):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise typer.BadParameter(f"'{text.strip()}' is not a positive number; give sizes like 0.05,0.1,0.2", param_hint="--epsilon")
        values.append(value)
    return Attack(method, values, 10 if steps is None else steps)


def robustness_table(attack: dict[str, Any], rows: list[dict[str, float]]) -> Table:
    steps = f", {attack['steps']} steps of {attack['step_size']}" if attack["method"] == "pgd" else ""
    table = Table(title=f"robustness: {attack['method']}{steps} (ε in {attack['units']})", title_justify="left")
    for col in ("ε", "accuracy", "loss"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row("clean" if row["epsilon"] == 0 else f"{row['epsilon']:g}", fmt(row["accuracy"]), fmt(row["loss"]))
    return table


def positive_class(name: str) -> str:
    """A binary task's one output is the probability of one class: which, for `validate` and `eval` to say."""
    return (
        f"positive class: {name!r} (the model outputs its probability, predict's prob_{name}; above 0.5 a row is {name!r}); "
        "precision, recall and F1 average both classes (macro)"
    )


def new_file(path: Path, option: str, suffixes: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output path that exists (nothing is overwritten), whose folder is
    missing, or (``suffixes``) whose extension names a format this command does not write."""
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory; give a file path inside it, e.g. {path / ('out' + (suffixes or ('',))[0])}")
    if path.exists():
        raise ConfigError(f"{option} {path}: file exists; choose a new name (mlptrain never overwrites a file)")
    if not path.parent.is_dir():
        raise ConfigError(f"{option} {path}: folder {path.parent} does not exist; create it or choose another path")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ConfigError(f"{option} {path}: cannot write '{path.suffix}' files; end the name with {', '.join(suffixes)}")


@app.command(cls=NamedHelpCommand, epilog="Example: mlptrain predict runs/csv_example/<time>/checkpoints/best.pt configs/data/flowers.csv -o preds.csv")
def predict(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="A .pt file from a run's checkpoints/ folder."),
    input: Path = typer.Argument(..., metavar="INPUT", help="CSV or Parquet (the training feature columns), or NPZ/NPY (array x), to predict."),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="Where to write predictions (.csv, .parquet or .npz)."),
    device: str = typer.Option("auto", "--device", "-d", help="auto | cpu | cuda | cuda:N."),
    mc_dropout: Optional[int] = typer.Option(None, "--mc-dropout", min=2, metavar="N", help="Predict the mean of N passes with dropout on."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of --mc-dropout's masks."),
) -> None:
    """Write predictions: the class and per-class probabilities, or regression values."""
    from mlptrain import pipeline

    new_file(output, "--output", (".csv", ".parquet", ".npz"))
    rows = pipeline.predict_file(checkpoint, input, output, device, mc_dropout, seed)
    out.print(f"wrote {rows} prediction{'' if rows == 1 else 's'} to {output}")


@app.command(cls=NamedHelpCommand, epilog="Example: mlptrain validate configs/xor.yaml --set model.hidden=[]")
def validate(
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML spec to check."),
    set_: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="Override a value, as for fit."),
    show_all: bool = typer.Option(False, "--all", help="Show every key of the resolved config, also those its choices do not read."),
) -> None:
    """Check a spec without training: print the resolved config and a layer-by-layer model summary."""
    from mlptrain.config import applied_dict, dump_yaml, load_spec, spec_to_dict

    spec = load_spec(config, list(set_))
    from mlptrain.summary import describe

    with naming(config):
        info = describe(spec)
    if show_all:
        out.print("# resolved config: every key")
        out.print(dump_yaml(spec_to_dict(spec)), markup=False)
    else:
        out.print("# resolved config: the keys that apply to this data and these choices (--all: every key)")
        out.print(dump_yaml(applied_dict(spec, info["task"], info["loss"])), markup=False)
    rows = info["rows"]
    out.print(
        f"task: {info['task']} (loss {info['loss']}); inputs {info['in_features']}, outputs {info['out_features']}; "
        f"rows train {rows['train']}, val {rows['val']}, test {rows['test']}"
    )
    if info.get("positive_class") is not None:
        out.print(positive_class(info["positive_class"]), markup=False)
    if info.get("columns"):
        columns = Table(title="columns (kind: how the model sees a feature; missing: empty cells in the file)", title_justify="left")
        for col, justify in (("column", "left"), ("role", "left"), ("dtype", "left"), ("kind", "left"), ("missing", "right")):
            columns.add_column(col, justify=justify)  # type: ignore[arg-type]
        for c in info["columns"]:
            columns.add_row(c["column"], c["role"], c["dtype"], c["kind"], str(c["missing"]))
        out.print(columns)
    table = Table(title="model", title_justify="left")
    for col, justify in (("layer", "left"), ("module", "left"), ("output shape", "right"), ("weights", "left"), ("params", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in info["layers"]:
        shape = "[" + ", ".join("N" if d is None else str(d) for d in row["output"]) + "]"
        weights = ", ".join(f"{k} {list(v)}" for k, v in row["weights"].items())
        table.add_row(row["name"], row["layer"], shape, weights, str(row["params"]))
    out.print(table)
    out.print(f"learnable parameters: {info['parameters']}")
    out.print(f"monitor: {info['monitor']} (logged: {', '.join(info['metrics'])})")
    step = info["step"]
    out.print(f"step: parts {', '.join(step['parts']) or 'none'}; backprop {step['backprop']}; cuda graph {step['cuda_graph']}",
              markup=False)
    out.print("config OK")


@app.command(cls=NamedHelpCommand, epilog="Example: mlptrain init my_experiment.yaml && mlptrain fit my_experiment.yaml")
def init(path: Path = typer.Argument(Path("mlptrain.yaml"), metavar="PATH", help="Where to write the starter config.")) -> None:
    """Write a commented starter config that runs as is."""
    from mlptrain.starter import STARTER

    new_file(path, "init")
    from mlptrain.runs import write_output

    write_output(path, STARTER.encode("utf-8"))
    out.print(f"wrote {path}; train it with: {command_name()} fit {path}")


@app.command(cls=NamedHelpCommand, epilog="Example: mlptrain tensorboard runs --port 6007")
def tensorboard(
    runs_dir: Path = typer.Argument(Path("runs"), metavar="RUNS_DIR", help="Directory holding run directories."),
    port: int = typer.Option(6006, "--port", min=1, max=65535, help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 to share on the network)."),
) -> None:
    """Start TensorBoard on the runs directory and print its URL."""
    if not runs_dir.is_dir():
        raise RunDirError(f"{runs_dir}: no such runs directory; train something first ({command_name()} fit CONFIG)")
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:  # before TensorBoard's own lines
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise MlptrainError(f"--port {port}: cannot serve on {host}:{port} ({exc.strerror}); pick another, e.g. --port {port + 1}") from None
    from tensorboard import program

    # In-process rather than a child process: Ctrl-C or SIGTERM stops the server with this command.
    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(runs_dir), "--port", str(port), "--host", host])
    out.print(f"TensorBoard on http://{host}:{port}/  (logdir {runs_dir}; Ctrl-C stops it)")
    try:
        code = board.main()
    except KeyboardInterrupt:
        code = 0
    if code:
        raise MlptrainError(f"tensorboard exited with code {code} (is port {port} in use? try --port)")


@app.command(cls=NamedHelpCommand, epilog="Example: mlptrain schema > mlptrain.schema.json  (then point your editor's YAML plugin at it)")
def schema(output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", help="Write to this file instead of stdout.")) -> None:
    """Print the JSON Schema of the spec, for editor validation and completion."""
    from mlptrain.config import json_schema

    if output is not None:
        new_file(output, "--output")
    text = json.dumps(json_schema(), indent=2)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        from mlptrain.runs import write_output

        write_output(output, (text + "\n").encode("utf-8"))


@contextlib.contextmanager
def notices_as_lines() -> Any:
    """Each ``Notice`` (dropped rows, unseen categories, a changed checkpoint) becomes one ``warning: ...`` line on stderr."""
    import warnings

    from mlptrain.errors import Notice

    with warnings.catch_warnings():
        warnings.simplefilter("always", Notice)
        default = warnings.showwarning

        def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            if issubclass(category, Notice):
                err.print(f"warning: {message}", markup=False)
            else:
                default(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


class Terminated(BaseException):
    """SIGTERM outside the training loop (which saves last.pt on it): unwinds like Ctrl-C, so that a
    run directory with nothing in it yet is removed instead of left behind."""


@contextlib.contextmanager
def signals_unwind() -> Any:
    """While a command runs, SIGINT raises KeyboardInterrupt and SIGTERM Terminated (whatever ``run`` set
    for the time after it); and a thread's failed write (TensorBoard's event writer on a full disk)
    prints no traceback: the main thread meets the same error at its next write and says it in one line."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        raise Terminated()

    default_hook = threading.excepthook

    def quiet_oserror(args: Any) -> None:
        if not issubclass(args.exc_type, OSError):
            default_hook(args)

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, handle),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    threading.excepthook = quiet_oserror
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        threading.excepthook = default_hook


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: run the app and turn every error into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("MLPTRAIN_DEBUG") == "1"
    if "--debug" in args:  # an option of mlptrain itself, wherever it is written: `fit x.yaml --debug` too
        args = ["--debug"] + [a for a in args if a != "--debug"]
    try:
        with notices_as_lines(), signals_unwind():
            result = app(args=args, prog_name="mlptrain", standalone_mode=False)
        if result == 130:  # click's answer to a Ctrl-C outside the training loop
            err.print("interrupted")
        return int(result) if isinstance(result, int) else 0
    except Terminated:
        err.print("terminated (SIGTERM)")
        return 143
    except Interrupted as exc:  # not an error: the run is saved and says how to go on
        err.print(str(exc), markup=False)
        return exc.exit_code
    except MlptrainError as exc:
        if debug:
            raise
        err.print(f"error: {exc}", markup=False)
        return exc.exit_code
    except typer.Exit as exc:
        if exc.exit_code == 130:  # click turns a Ctrl-C outside the training loop into Exit(130)
            err.print("interrupted")
        return exc.exit_code
    except ClickException as exc:
        if debug:
            raise
        subcommand = exc.ctx.command_path.partition(" ")[2] if getattr(exc, "ctx", None) else ""  # after prog_name
        command = " ".join(filter(None, (command_name(), subcommand)))
        err.print(f"error: {exc.format_message()} (see `{command} --help`)", markup=False)  # type: ignore[attr-defined]
        return exc.exit_code  # type: ignore[attr-defined]
    except typer.Abort:
        err.print("aborted")
        return 130
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


def exit_at_once(signum: int, frame: Any) -> None:
    """A signal outside a command's run: before it starts, or once it is done (its files whole) and
    Python shuts down, where a second Ctrl-C would print a traceback from an atexit callback."""
    with contextlib.suppress(Exception):  # os._exit writes out no buffer itself
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(128 + signum)


def run() -> None:
    """The process's entry point (the console script, python -m mlptrain): main's exit code, and
    after a command that succeeded, without Python's teardown."""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):  # main's signals_unwind overrides them while the command runs
        signal.signal(signum, exit_at_once)
    code = main()
    if code == 0:
        exit_without_teardown()
    sys.exit(code)


def exit_without_teardown() -> None:
    """End a finished command now: its files are closed and its atexit handlers run, but Python's own
    teardown, which frees every object of every module torch loaded one at a time, only keeps the
    user waiting after the last line. Returns, for an ordinary exit, while a non-daemon thread still
    runs (Python would wait for it), under a profiler, tracer or debugger (cProfile and trace write
    their results after the command returns), or when the output cannot be flushed."""
    import atexit
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return
    monitoring = getattr(sys, "monitoring", None)  # Python 3.12+: cProfile and coverage register there
    watched = monitoring is not None and any(monitoring.get_tool(tool) is not None for tool in range(6))
    if watched or sys.getprofile() is not None or sys.gettrace() is not None:
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: let Python's exit report it as it always has
        return
    os._exit(0)
