"""The YAML spec: one pydantic model per section, ``extra="forbid"`` everywhere.

The models are the documentation: ``mlptrain schema`` prints their JSON Schema and the README's
config reference is generated from them (``python -m mlptrain.docs``). This module never imports
torch, so ``mlptrain validate`` and ``--help`` stay fast. Names that pick a constructor (activation,
loss, optimizer, ...) are ``Literal`` types here; the registries beside the constructors are tested
to hold exactly these names.
"""

from __future__ import annotations

import copy
import difflib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Sequence, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlptrain.errors import ConfigError, ConfigWarning, DataError, files_in
from mlptrain.wording import article, plural

ActivationName = Literal[
    "sigmoid", "tanh", "hardtanh", "softsign", "relu", "leaky_relu", "prelu", "abs",
    "elu", "softplus", "gelu", "silu", "maxout", "identity",
]
InitName = Literal[
    "default", "xavier_uniform", "xavier_normal", "glorot_uniform", "glorot_normal",
    "kaiming_uniform", "kaiming_normal", "he_uniform", "he_normal", "normal", "uniform", "orthogonal",
]
TaskName = Literal["auto", "binary", "multiclass", "regression", "multilabel"]
LossName = Literal[
    "cross_entropy", "bce", "nll", "mse", "mae", "huber", "smooth_l1", "log_cosh", "hinge", "kl_div",
]
OptimizerName = Literal["sgd", "adam", "adamw", "nadam", "rmsprop", "adagrad", "adadelta"]
SchedulerName = Literal[
    "none", "step", "multistep", "exponential", "inverse_sqrt", "cosine", "reduce_on_plateau",
]
SyntheticName = Literal["xor", "moons", "circles", "spirals", "blobs", "sine"]
SklearnName = Literal["digits", "iris", "wine", "breast_cancer", "diabetes"]
FileName = Literal["csv", "parquet", "npz"]
ImageName = Literal["fashion_mnist", "mnist", "kmnist", "emnist", "cifar10"]
DataName = Literal[SyntheticName, SklearnName, FileName, ImageName]

SYNTHETIC_NAMES: tuple[str, ...] = get_args(SyntheticName)
SKLEARN_NAMES: tuple[str, ...] = get_args(SklearnName)
FILE_NAMES: tuple[str, ...] = get_args(FileName)
IMAGE_NAMES: tuple[str, ...] = get_args(ImageName)
PIXEL_NAMES: tuple[str, ...] = ("digits", *IMAGE_NAMES)  # sets read as images (an image shape)
EmnistSubset = Literal["balanced", "byclass", "bymerge", "digits", "letters", "mnist"]
TABLE_NAMES: tuple[str, ...] = ("csv", "parquet")  # files with named columns of any dtype (mlptrain.data.tabular)
MissingPolicy = Literal["error", "drop", "impute_mean", "impute_median", "impute_constant"]
SEED_MAX = 2**32 - 1  # numpy's generators take seeds in [0, 2**32)


def check_device(value: str) -> str:
    """auto, cpu, cuda or cuda:N (train.device, and --device of every command)."""
    if not (value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {_shown(value)}")
    return value


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are checked on assignment too, and every
    number is finite (YAML's .nan and .inf would otherwise pass an unbounded field, or lr's gt=0)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # key -> (the key whose value decides, the values that read the key): e.g. momentum is read by
    # optimizer names sgd and rmsprop only. Set away from its default under any other value it would
    # change nothing, so ``unused_keys`` refuses it.
    USED_BY: ClassVar[dict[str, tuple[str, tuple[Any, ...]]]] = {}
    # key -> values that switch the key's own effect off (histograms_every: 0, never): they agree with any choice.
    NEVER: ClassVar[dict[str, tuple[Any, ...]]] = {}


class NamedSection(Section):
    """A section whose only required key is ``name``; ``loss: huber`` is short for ``{name: huber}``."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        """The schema says so too: a name alone, or the mapping (editors flag neither `activation: relu`)."""
        mapping = handler(core_schema)
        name = handler.resolve_ref_schema(mapping)["properties"]["name"]
        short = {k: v for k, v in name.items() if k not in ("title", "default")}
        return {"anyOf": [short, mapping]}


class SplitSpec(Section):
    """How one data file (or a built-in set) is split; ignored for a split given as its own file."""

    val: float = Field(
        0.15, ge=0.0, lt=1.0,
        description="Fraction of rows held out for validation (image sets: of the official training set).",
    )
    test: float = Field(
        0.15, ge=0.0, lt=1.0,
        description="Fraction of rows held out for the test split (ignored for image sets: their official test set is the test split).",
    )
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of the shuffle before splitting (independent of train.seed).")
    stratify: bool = Field(True, description="Keep class proportions equal across splits (classification).")



class DataSpec(Section):
    """Where the rows come from, how they are split, and how features are scaled."""

    name: DataName = Field(
        ...,
        description="Built-in synthetic set (xor, moons, circles, spirals, blobs, sine), scikit-learn's bundled "
        "set (digits, iris, wine, breast_cancer, diabetes), a file kind (csv, parquet, npz), or an image set "
        "(fashion_mnist, mnist, kmnist, emnist, cifar10; see Image data).",
    )
    path: Optional[str] = Field(None, description="csv/parquet/npz: the file to read and split (relative to the config file).")
    train_path: Optional[str] = Field(None, description="csv/parquet/npz: a separate training file (instead of `path`).")
    val_path: Optional[str] = Field(None, description="csv/parquet/npz: a separate validation file (with `path` or `train_path`; then split.val is not carved).")
    test_path: Optional[str] = Field(None, description="csv/parquet/npz: a separate test file (with `path` or `train_path`; then split.test is not carved).")
    target: Union[str, list[str], None] = Field(
        None, description="csv/parquet: target column (a list of columns for multilabel or multi-output regression)."
    )
    positive_class: Union[str, int, None] = Field(
        None, description="Binary tasks: the class whose probability the output is (predict's `prob_<class>` column, "
        "the PR curve's positive class); default the second of the two in sorted order (1 of 0 and 1, `yes` of no and yes).",
    )
    features: Optional[list[str]] = Field(
        None, description="csv/parquet: feature columns; default all columns but the target and `id`."
    )
    id: Optional[str] = Field(
        None, description="csv/parquet: an identifier column: not a feature; `predict` copies it as its first output column."
    )
    categorical: Optional[list[str]] = Field(
        None,
        description="csv/parquet: feature columns to one-hot encode although they hold numbers (integer codes), read "
        "as the file writes them (02134 keeps its zero); text and category columns are categorical already (text "
        "that is all numbers is taken for numbers). Vocabulary from the training split; a category "
        "unseen in training encodes as all zeros, with a warning.",
    )
    missing: MissingPolicy = Field(
        "error",
        description="csv/parquet: empty feature cells: `error` (counts them per column), `drop` their rows at fit time "
        "(predict and eval --data fill them like impute_mean, with a warning), or fill with the training split's mean / median "
        "(bool columns as 0/1; categorical columns: the most frequent training category) or `fill_value` "
        "(categorical: the category `<missing>`). Fitted on train, stored in the checkpoint. Rows with an empty "
        "target are always dropped, with a warning.",
    )
    fill_value: float = Field(
        0.0, description="missing `impute_constant`: the value of empty numeric and bool cells."
    )
    n_samples: int = Field(1000, ge=4, le=10_000_000, description="Synthetic sets: number of rows generated.")
    noise: float = Field(0.1, ge=0.0, description="Synthetic sets: standard deviation of the Gaussian noise (blobs: each cluster's spread is 10 × noise, its centers lying in a box of ±10).")
    n_classes: int = Field(3, ge=2, description="blobs and spirals: number of classes.")
    n_features: int = Field(2, ge=1, description="blobs: number of input features.")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Synthetic sets: seed of the generator.")
    root: Optional[str] = Field(
        None,
        description="Image sets: directory holding the set's files (relative to the config file), looked in before "
        "the system's (fashion_mnist: /usr/share/datasets/fashion-mnist); see Image data.",
    )
    download: bool = Field(
        False, description="Image sets: fetch missing files into `root` with torchvision (needs a network and `root`)."
    )
    subset: EmnistSubset = Field("balanced", description="emnist: which EMNIST split (its classes and files).")
    split: SplitSpec = Field(default_factory=SplitSpec, description="Train/val/test fractions and shuffle seed.")
    scale: Literal["standard", "minmax", "none"] = Field(
        "standard", description="Feature scaling fitted on the training split only and stored in the checkpoint."
    )
    scale_target: bool = Field(
        True,
        description="Regression: standardize targets for training (the loss is in standardized units); "
        "metrics and predictions are in the original units.",
    )

    USED_BY = {
        **{k: ("name", FILE_NAMES) for k in ("path", "train_path", "val_path", "test_path")},
        **{k: ("name", TABLE_NAMES) for k in ("target", "features", "id", "categorical", "missing")},
        **{k: ("name", SYNTHETIC_NAMES) for k in ("n_samples", "noise", "seed")},
        "n_classes": ("name", ("blobs", "spirals")),
        "n_features": ("name", ("blobs",)),
        "fill_value": ("missing", ("impute_constant",)),
        **{k: ("name", IMAGE_NAMES) for k in ("root", "download")},
        "subset": ("name", ("emnist",)),
    }

    @model_validator(mode="after")
    def _fractions(self) -> "DataSpec":
        """The rows held out by fraction: not the test split of an image set (its official one), nor a split given as a file."""
        test = 0.0 if (self.name in IMAGE_NAMES or self.test_path) else self.split.test
        val = 0.0 if self.val_path else self.split.val
        if val + test >= 1.0:
            shown = f"val + test = {val + test:g}" if test else f"val = {val:g}"
            raise ValueError(f"data.split: {shown} leaves no training rows; keep it below 1")
        return self

    @model_validator(mode="after")
    def _files(self) -> "DataSpec":
        if self.name in FILE_NAMES:
            if not self.path and not self.train_path:
                raise ValueError(f"data.name '{self.name}' needs data.path (or data.train_path) naming the file to read")
            if self.path and self.train_path:
                raise ValueError("give either data.path (split by fractions) or data.train_path, not both")
            if self.name in TABLE_NAMES and self.target is None:
                raise ValueError(f"data.name '{self.name}' needs data.target: the name of the target column")
            if self.name not in TABLE_NAMES:
                given = [k for k in ("target", "features", "id", "categorical") if getattr(self, k)] + (
                    ["missing"] if self.missing != "error" else [])
                if given:
                    raise ValueError(f"data.{given[0]} applies to csv/parquet files only, not to '{self.name}' arrays "
                                     "(their arrays are named x and y)")
            targets = [self.target] if isinstance(self.target, str) else list(self.target or [])
            for key, names in (("target", targets), ("features", self.features or []), ("categorical", self.categorical or [])):
                twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
                if twice is not None:
                    raise ValueError(f"data.{key} names '{twice}' twice; list each column once")
            both = [t for t in targets if t in (self.features or [])]
            if both:
                raise ValueError(
                    f"data.target '{both[0]}' is also in data.features: the model would be given its answer; "
                    "remove it from data.features"
                )
            if self.id is not None and (self.id in targets or self.id in (self.features or [])):
                where = "data.target" if self.id in targets else "data.features"
                raise ValueError(f"data.id '{self.id}' is also in {where}; an id column is neither a feature nor a target")
        else:
            given = [
                k for k in ("path", "train_path", "val_path", "test_path", "target", "features", "id", "categorical")
                if getattr(self, k)
            ] + (["missing"] if self.missing != "error" else [])
            if given:
                kinds = "csv/parquet" if given[0] in ("id", "categorical", "missing") else "csv/parquet/npz"
                raise ValueError(f"data.{given[0]} applies to {kinds} files only, not to the built-in set '{self.name}'")
        if self.name not in IMAGE_NAMES and (self.root is not None or self.download):
            key = "root" if self.root is not None else "download"
            raise ValueError(f"data.{key} applies to image sets ({', '.join(IMAGE_NAMES)}) only, not to '{self.name}'")
        if self.name != "emnist" and self.subset != "balanced":
            raise ValueError(f"data.subset applies to emnist only, not to '{self.name}'")
        if self.download and not self.root:
            raise ValueError("data.download: true needs data.root: the directory to download into")
        return self


class ElasticSpec(Section):
    """Simard et al.'s elastic distortion: a random displacement field, smoothed, moves every pixel."""

    alpha: float = Field(
        0.0, ge=0.0, description="Strength: the smoothed field of U(-1, 1) displacements is scaled by alpha pixels "
        "(Simard et al.: 34 on 28x28 MNIST); 0 switches it off.",
    )
    sigma: float = Field(
        4.0, gt=0.0, description="Smoothness: the standard deviation, in pixels, of the Gaussian that smooths the field "
        "(Simard et al.: 4; small sigma is random jitter, large sigma a near-translation).",
    )


# keys that move pixels, so they need an image shape (hflip and shift first: their messages came first)
PIXEL_KEYS = ("hflip", "shift", "rotate", "scale", "elastic", "crop")


class AugmentSpec(Section):
    """Dataset augmentation: random changes to each training batch, drawn anew every step (never at eval)."""

    hflip: bool = Field(False, description="Images: mirror left-right, each image with probability 0.5.")
    shift: int = Field(
        0, ge=0, description="Images: random translation by up to this many pixels each way (the border fills with black)."
    )
    noise: float = Field(
        0.0, ge=0.0, description="Gaussian noise of this standard deviation added to the training inputs (after scaling)."
    )
    rotate: float = Field(
        0.0, ge=0.0, le=180.0,
        description="Images: rotation about the centre by an angle drawn uniformly from [-rotate, rotate] degrees "
        "(bilinear, black corners).",
    )
    scale: Optional[tuple[float, float]] = Field(
        None, description="Images: zoom by a factor drawn uniformly from [min, max] about the centre, e.g. [0.9, 1.1] "
        "(below 1 shrinks, with a black border).",
    )
    elastic: ElasticSpec = Field(default_factory=ElasticSpec, description="Images: elastic distortion (alpha, sigma).")
    crop: int = Field(
        0, ge=0, description="Images: pad every side with this many black pixels and cut a random window of the "
        "original size back out (torchvision's RandomCrop(padding=N)): the content moves by up to N pixels each way, "
        "the translation `shift: N` draws (keep one of the two).",
    )
    label_noise: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Classification: each step, replace this fraction of the batch's labels by a class drawn "
        "uniformly (it may be the same one); the notes' noise at the output targets, drawn, where "
        "loss.label_smoothing is its average. train/accuracy counts against the labels as trained (noisy).",
    )
    mixup: float = Field(
        0.0, ge=0.0,
        description="mixup's alpha: each row is mixed with another row of the batch, inputs and targets (one-hot for "
        "classes) alike, by λ ~ Beta(alpha, alpha), one λ per pair; 0 switches it off (0.2-0.4 is usual). "
        "train/accuracy counts the class with the larger share of each mixed target.",
    )

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: Optional[tuple[float, float]]) -> Optional[tuple[float, float]]:
        if value is not None and not (0 < value[0] <= value[1]):
            raise ValueError(f"give [min, max] with 0 < min <= max, got {list(value)} (e.g. [0.9, 1.1])")
        return value

    @property
    def active(self) -> bool:
        """The input changes of the ``augment`` step part (label_noise and mixup are parts of their own)."""
        return self.noise > 0 or any(self.moves(key) for key in PIXEL_KEYS)

    def moves(self, key: str) -> bool:
        """Whether the pixel key ``key`` is switched on."""
        value = getattr(self, key)
        if key == "elastic":
            return value.alpha > 0
        if key == "scale":
            return value is not None
        return bool(value)

    def check_data(self, image_shape: Optional[Sequence[int]], data_name: str) -> None:
        """Keys that move pixels need an image shape (fit and validate); a shift or crop as large as the image
        would leave only black images, and crop with shift would draw the same translation twice."""
        if image_shape is not None:
            side = min(int(v) for v in image_shape[1:])
            for key in ("shift", "crop"):
                if getattr(self, key) >= side:
                    raise ConfigError(f"augment.{key} = {getattr(self, key)} moves {side}x{side} images out of the frame; "
                                      f"keep it below {side} (2-4 is usual)")
            if self.shift and self.crop:
                raise ConfigError("augment.crop and augment.shift both move the image by whole pixels with a black border "
                                  "(padding and cropping is a translation); keep one of them")
            return
        for key in PIXEL_KEYS:
            if self.moves(key):
                raise ConfigError(
                    f"augment.{key} moves pixels, so it needs image data ({', '.join(PIXEL_NAMES)}); data "
                    f"'{data_name}' has no image shape: remove augment.{key} (augment.noise works on any data)"
                )

    def check_task(self, task: str, loss: str, class_weighted: bool) -> None:
        """label_noise draws classes and mixup mixes targets: refuse the tasks and losses they cannot serve."""
        if self.label_noise and task not in ("binary", "multiclass"):
            raise ConfigError(f"augment.label_noise replaces each row's class by another, and a {task} task has no one "
                              "class per row; remove it (augment.noise adds noise to the inputs of any task)")
        if not self.mixup:
            return
        if loss in ("nll", "hinge"):
            raise ConfigError(f"augment.mixup mixes the targets, which loss '{loss}' cannot take (it reads hard labels); "
                              "use the task's default loss (bce, cross_entropy) or kl_div, or remove augment.mixup")
        if class_weighted:
            raise ConfigError("augment.mixup with loss.class_weight: a mixed row has no one class to weigh it by; "
                              "remove one of them")


class AdversarialSpec(Section):
    """Adversarial training (Goodfellow et al. 2015): each step also trains on its batch perturbed against the model.

    The objective is J̃ = (1 − weight)·J(x) + weight·J(x + δ); ε is in the data's units, as `eval --attack` reads it."""

    method: Optional[Literal["fgsm", "pgd"]] = Field(
        None,
        description="null: off. fgsm: δ = ε·sign(∇ₓJ), one gradient. pgd: `steps` sign-gradient steps of `step_size`, "
        "each projected back into the L∞ ball of radius ε (Madry et al. 2018).",
    )
    epsilon: Optional[float] = Field(
        None, gt=0.0,
        description="Size ε of the perturbation, in the data's units: image pixels in [0, 1] (perturbed images are "
        "clipped to [0, 1]); other data, standard deviations of each feature in the training rows (one-hot and bool "
        "columns of a CSV are not perturbed). Required with a method.",
    )
    weight: float = Field(0.5, gt=0.0, le=1.0, description="Share of the adversarial loss in the objective (Goodfellow et al.: 0.5; 1: adversarial examples only).")
    steps: int = Field(10, ge=1, description="pgd: projected gradient steps per batch.")
    step_size: Optional[float] = Field(None, gt=0.0, description="pgd: size of each step, in ε's units; default 2.5·ε/steps.")
    random_start: bool = Field(True, description="pgd: start from a uniform random point of the ε ball (drawn from a seeded stream of its own).")

    USED_BY = {
        **{k: ("method", ("fgsm", "pgd")) for k in ("epsilon", "weight")},
        **{k: ("method", ("pgd",)) for k in ("steps", "step_size", "random_start")},
    }

    @model_validator(mode="after")
    def _epsilon(self) -> "AdversarialSpec":
        if self.method is not None and self.epsilon is None:
            raise ValueError(
                f"adversarial.method {self.method} needs adversarial.epsilon, the size of the perturbation "
                "(image pixels in [0, 1], other data in standard deviations), e.g. epsilon: 0.1"
            )
        return self

    @property
    def active(self) -> bool:
        return self.method is not None

    def pgd_step_size(self) -> float:
        """step_size, or its default 2.5·ε/steps (Madry et al.'s rule: the steps can cross the ball and back)."""
        assert self.epsilon is not None
        return self.step_size if self.step_size is not None else 2.5 * self.epsilon / self.steps


class RegularizationSpec(Section):
    """Penalties on the weights and hidden activations, a max-norm constraint and weight noise (the
    notes' norm penalties, norm penalties as constraints, sparse representations and noise robustness).
    "Weight matrices" are the weights of every Linear layer, hidden and output: not biases (unless
    include_bias), norm scales or PReLU slopes."""

    l1: float = Field(
        0.0, ge=0.0,
        description="L1 penalty λ₁ Σ|w| over the weight matrices, added to the training loss (logged apart as "
        "train/penalty): pushes the weights of useless inputs toward 0 (weights/small_fraction).",
    )
    l2: float = Field(
        0.0, ge=0.0,
        description="L2 penalty (λ₂/2) Σ w² over the weight matrices, added to the training loss; unlike "
        "optimizer.weight_decay it is part of the loss the optimizer sees (Adam rescales its gradient) and "
        "leaves biases alone. The notes' λ‖w‖² is l2: 2λ.",
    )
    include_bias: bool = Field(False, description="Add the biases of the Linear layers to the l1 and l2 penalties.")
    max_norm: Optional[float] = Field(
        None, gt=0.0,
        description="After every optimizer step, rescale each unit's incoming weight vector (each row of every "
        "Linear weight) to ‖w‖₂ ≤ c: projected gradient descent (Srivastava et al. use 3-4, with dropout).",
    )
    activation_l1: float = Field(
        0.0, ge=0.0,
        description="Sparse representations: α × the batch's mean of Σ|h| over every hidden unit's activation h, "
        "added to the training loss.",
    )
    weight_noise: float = Field(
        0.0, ge=0.0,
        description="σ of Gaussian noise added to every weight matrix for each step's forward and backward pass "
        "and taken off before the update (a random stream of its own, saved in last.pt).",
    )

    @property
    def penalized(self) -> bool:
        """l1 or l2 adds a term to the loss."""
        return self.l1 > 0 or self.l2 > 0

    @property
    def adds_loss_terms(self) -> bool:
        """The loss gains a penalty (l1, l2, activation_l1): train/data_loss and train/penalty are logged."""
        return self.penalized or self.activation_l1 > 0

    @property
    def active(self) -> bool:
        return self.penalized or self.max_norm is not None or self.activation_l1 > 0 or self.weight_noise > 0


class ActivationSpec(NamedSection):
    """A hidden-layer nonlinearity; the parameters apply to the activation that names them."""

    name: ActivationName = Field("relu", description="Activation function.")
    slope: float = Field(
        0.01, description="leaky_relu: slope for z < 0; prelu: initial learned slope (the notes' generalized ReLU)."
    )
    alpha: float = Field(1.0, gt=0.0, description="elu: saturation value for z < 0.")
    beta: float = Field(1.0, gt=0.0, description="softplus: sharpness, log(1 + exp(beta z)) / beta.")
    k: int = Field(2, ge=2, description="maxout: number of linear pieces whose maximum each unit outputs.")

    USED_BY = {
        "slope": ("name", ("leaky_relu", "prelu")), "alpha": ("name", ("elu",)), "beta": ("name", ("softplus",)),
        "k": ("name", ("maxout",)),
    }


class InitSpec(NamedSection):
    """How weights and biases of every linear layer start."""

    name: InitName = Field("default", description="Weight init; `default` keeps PyTorch's (kaiming uniform, a=√5).")
    std: float = Field(0.01, gt=0.0, description="normal: standard deviation.")
    a: float = Field(0.05, gt=0.0, description="uniform: weights drawn from U(-a, a).")
    gain: float = Field(1.0, gt=0.0, description="xavier/glorot and orthogonal: scaling gain.")
    bias: float = Field(0.0, description="Constant every bias starts at (not with `default`, which keeps PyTorch's biases).")

    USED_BY = {
        "std": ("name", ("normal",)), "a": ("name", ("uniform",)),
        "gain": ("name", ("xavier_uniform", "xavier_normal", "glorot_uniform", "glorot_normal", "orthogonal")),
        "bias": ("name", tuple(n for n in get_args(InitName) if n != "default")),
    }


class ModelSpec(Section):
    """The network: hidden layer sizes, activations, init, dropout and normalization."""

    hidden: list[int] = Field(
        default_factory=lambda: [64], description="Hidden layer widths; [] is logistic/linear regression."
    )
    activation: Union[ActivationSpec, list[ActivationSpec]] = Field(
        default_factory=ActivationSpec, description="One activation for all hidden layers, or a list with one per layer."
    )
    init: InitSpec = Field(default_factory=InitSpec, description="Weight and bias initialization.")
    input_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Probability of dropping each input feature (the notes keep 0.8: use 0.2)."
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Probability of dropping each hidden unit (the notes keep 0.5: use 0.5)."
    )
    norm: Literal["none", "batch", "layer"] = Field(
        "none", description="Normalization after each hidden linear layer, before its activation."
    )

    @field_validator("hidden")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(w < 1 for w in value):
            raise ValueError(f"every hidden width must be at least 1, got {value}")
        return value

    @model_validator(mode="after")
    def _per_layer(self) -> "ModelSpec":
        if isinstance(self.activation, list) and len(self.activation) != len(self.hidden):
            raise ValueError(
                f"model.activation lists {len(self.activation)} activations for {len(self.hidden)} hidden layers; "
                "give one per layer or a single one"
            )
        return self

    def activations(self) -> list[ActivationSpec]:
        """One activation spec per hidden layer."""
        if isinstance(self.activation, list):
            return list(self.activation)
        return [self.activation] * len(self.hidden)


class LossSpec(NamedSection):
    """The training loss; by default the one that matches the task's output unit."""

    name: Optional[LossName] = Field(
        None,
        description="Loss; default from the task: binary→bce, multiclass→cross_entropy, regression→mse, multilabel→bce. "
        "mse on a classification task is the squared error of the sigmoid/softmax probabilities against one-hot targets.",
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="cross_entropy, kl_div and bce: label smoothing, the notes' noise at the output targets: "
        "targets (1 - ε) one-hot + ε/K (bce: ε/2 toward the other class).",
    )
    delta: float = Field(1.0, gt=0.0, description="huber and smooth_l1: where the loss turns from quadratic to linear.")
    margin: float = Field(1.0, gt=0.0, description="hinge: the margin.")
    class_weight: Union[Literal["balanced"], dict[str, float], None] = Field(
        None,
        description="cross_entropy, nll and bce (binary): weight each row's loss by its class: `balanced` "
        "(n_samples / (n_classes * count) on the training split, scikit-learn's formula) or {class_name: weight} "
        "(unlisted classes 1). The loss is the weighted mean Σ w ℓ / Σ w (PyTorch's cross_entropy convention). "
        "val/loss and test loss are weighted too, so a val/loss monitor follows the objective trained (Keras "
        "weighs the training loss only); accuracy, precision, recall and F1 are never weighted.",
    )

    @field_validator("class_weight", mode="before")
    @classmethod
    def _class_names(cls, value: Any) -> Any:
        # YAML reads `{0: 1.0, 1: 5.0}` with integer keys; class names are strings
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("class_weight")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if not value:
                raise ValueError("an empty mapping weighs nothing; give {class_name: weight, ...} or 'balanced'")
            bad = {k: w for k, w in value.items() if not (w >= 0.0 and w < float("inf"))}
            if bad:
                raise ValueError(f"class weights must be finite and >= 0, got {bad}")
            if not any(value.values()):
                raise ValueError("class weights cannot all be 0")
        return value

    USED_BY = {
        "label_smoothing": ("name", ("cross_entropy", "kl_div", "bce")), "delta": ("name", ("huber", "smooth_l1")),
        "margin": ("name", ("hinge",)),
    }


class OptimizerSpec(NamedSection):
    """The gradient-descent variant and its hyperparameters."""

    name: OptimizerName = Field("adam", description="Optimizer.")
    lr: float = Field(1e-3, gt=0.0, description="Learning rate η.")
    weight_decay: float = Field(
        0.0, ge=0.0,
        description="L2 weight decay λ on every parameter, as PyTorch applies it: λθ is added to the gradient (the "
        "notes' penalty (λ/2)‖θ‖², biases, norm scales and PReLU slopes included); adamw decays decoupled, θ ← θ − η λ θ. "
        "regularization.l2 is the penalty as a loss term, on the weight matrices only.",
    )
    momentum: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="sgd and rmsprop: momentum μ, in PyTorch's form v ← μv + g, θ ← θ − ηv (the notes' v ← μv + η g, "
        "θ ← θ − v is the same at a constant η).",
    )
    nesterov: bool = Field(False, description="sgd: Nesterov momentum (needs momentum > 0).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adam, adamw, nadam: moment decay rates.")
    eps: Optional[float] = Field(
        None, gt=0.0,
        description="Denominator epsilon of adam, adamw, nadam, rmsprop, adagrad, adadelta; default each one's own "
        "(1e-8; adagrad 1e-10; adadelta 1e-6, whose first steps are about √eps).",
    )
    alpha: float = Field(0.99, gt=0.0, lt=1.0, description="rmsprop: decay of the squared-gradient average.")
    rho: float = Field(0.9, gt=0.0, lt=1.0, description="adadelta: decay of the running averages.")

    USED_BY = {
        "momentum": ("name", ("sgd", "rmsprop")), "nesterov": ("name", ("sgd",)), "betas": ("name", ("adam", "adamw", "nadam")),
        "eps": ("name", ("adam", "adamw", "nadam", "rmsprop", "adagrad", "adadelta")),
        "alpha": ("name", ("rmsprop",)), "rho": ("name", ("adadelta",)),
    }

    @model_validator(mode="after")
    def _nesterov(self) -> "OptimizerSpec":
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ValueError("optimizer.nesterov needs optimizer.name 'sgd' and optimizer.momentum > 0")
        for b in self.betas:
            if not 0.0 <= b < 1.0:
                raise ValueError(f"optimizer.betas must lie in [0, 1), got {list(self.betas)}")
        return self


class SchedulerSpec(NamedSection):
    """Learning-rate decay, optionally after a linear warmup."""

    name: SchedulerName = Field("none", description="Schedule of the learning rate; the lr is logged every epoch.")
    interval: Literal["epoch", "step"] = Field(
        "epoch", description="Whether t counts epochs or optimizer steps (reduce_on_plateau is always per epoch)."
    )
    warmup: int = Field(0, ge=0, description="Linear warmup from lr/(warmup+1) to lr over this many intervals first.")
    step_size: int = Field(10, ge=1, description="step: multiply the lr by gamma every step_size intervals.")
    milestones: list[int] = Field(default_factory=lambda: [30, 60], description="multistep: intervals where lr *= gamma.")
    gamma: float = Field(0.1, gt=0.0, description="step, multistep, exponential: decay factor.")
    t_max: Optional[int] = Field(None, ge=1, description="cosine: intervals over which the lr falls from lr to min_lr, then stays there; default all of training (epochs, or steps with interval: step).")
    min_lr: float = Field(0.0, ge=0.0, description="cosine and reduce_on_plateau: lower bound of the lr after warmup; below optimizer.lr.")
    factor: float = Field(0.1, gt=0.0, lt=1.0, description="reduce_on_plateau: lr *= factor on a plateau.")
    patience: int = Field(5, ge=0, description="reduce_on_plateau: epochs without improvement tolerated; the lr drops on the next one (PyTorch's rule).")
    monitor: Optional[str] = Field(
        None,
        description="reduce_on_plateau: metric watched, e.g. train/loss (max for accuracy/precision/recall/f1/r2, "
        "else min); default train.early_stopping.monitor with its mode."
    )

    USED_BY = {
        "step_size": ("name", ("step",)), "milestones": ("name", ("multistep",)),
        "gamma": ("name", ("step", "multistep", "exponential")), "t_max": ("name", ("cosine",)),
        "min_lr": ("name", ("cosine", "reduce_on_plateau")),
        **{k: ("name", ("reduce_on_plateau",)) for k in ("factor", "patience", "monitor")},
        "interval": ("name", tuple(n for n in get_args(SchedulerName) if n != "reduce_on_plateau")),
    }


class EarlyStoppingSpec(Section):
    """Stop when the monitored metric stops improving (Keras names)."""

    enabled: bool = Field(True, description="Stop early; when false, train all epochs (best.pt is still kept).")
    monitor: str = Field("val/loss", description="Metric to watch: any name an epoch logs (`train/<m>`, `val/<m>`, `lr`, and with a regularizer `train/penalty`, `weights/<m>`; `validate` lists them), e.g. val/accuracy; it also picks best.pt.")
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="Whether lower or higher is better; auto: max for accuracy/precision/recall/f1/r2."
    )
    patience: int = Field(10, ge=0, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0.0, description="Smallest change that counts as an improvement.")
    restore_best_weights: bool = Field(
        True,
        description="End with the best epoch's weights rather than the last (with `enabled: false` too; "
        "set false to keep the last epoch's).",
    )

    USED_BY = {"patience": ("enabled", (True,))}


class CheckpointSpec(Section):
    """Which checkpoints a run keeps under `checkpoints/`."""

    save_best: bool = Field(True, description="Keep best.pt: the weights of the best epoch by the monitored metric.")
    save_last: bool = Field(
        True,
        description="Keep last.pt: everything `mlptrain resume` needs (weights, optimizer, schedule, early stopping, "
        "random streams, position), rewritten after every epoch and when training is interrupted.",
    )
    every_steps: Optional[int] = Field(
        None, ge=1,
        description="Also rewrite last.pt every N optimizer steps, recording the position within the epoch, so a "
        "killed run loses at most N steps (for long epochs; each save copies the weights and optimizer state, and "
        "training waits if the previous save is not yet on disk).",
    )

    @model_validator(mode="after")
    def _needs_last(self) -> "CheckpointSpec":
        if self.every_steps is not None and not self.save_last:
            raise ValueError("train.checkpoint.every_steps rewrites last.pt, so it needs save_last: true")
        return self


class TrainSpec(Section):
    """The loop: epochs, batches, seed, device, early stopping, checkpoints, clipping."""

    epochs: int = Field(100, ge=1, description="Maximum number of passes over the training split.")
    batch_size: Union[int, Literal["full"]] = Field(
        64, description="Rows per step: N minibatch, 1 pure stochastic, `full` full-batch gradient descent."
    )
    eval_batch_size: int = Field(4096, ge=1, description="Rows per forward pass when evaluating.")
    shuffle: bool = Field(True, description="Draw a new permutation of the training rows every epoch.")
    drop_last: bool = Field(False, description="Skip the last, smaller batch of an epoch (with model.norm: batch a last batch of one row is skipped anyway).")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of weights init, dropout and shuffling: same seed, same metrics.")
    device: str = Field("auto", description="auto (cuda when available), cpu, cuda or cuda:N; `--device` overrides.")
    grad_clip: Optional[float] = Field(None, gt=0.0, description="Clip the global gradient norm to this value.")
    precision: Literal["32", "bf16-mixed", "16-mixed", "auto"] = Field(
        "32",
        description="32: float32 throughout; bf16-mixed / 16-mixed: autocast matmuls to bfloat16 / float16 "
        "(16-mixed scales the loss with a GradScaler). Weights and optimizer state stay float32. auto: bf16-mixed "
        "where the device multiplies bfloat16 natively (a GPU from Ampere on, a CPU with AVX512-BF16 or AMX), else "
        "32; summary.json says which.",
    )
    compile: bool = Field(
        False, description="torch.compile the model (pays on GPUs; on small CPU models it is often slower)."
    )
    cuda_graph: bool = Field(
        False,
        description="On CUDA, record one training step as a CUDA graph and replay it for every full batch: one launch "
        "a step instead of dozens, where a small model waits on its launches. Off by default until it has run on a GPU "
        "(bench/gpu_check.py checks it against op-by-op training). Where the step needs the host (a per-step "
        "schedule, on_nan: skip_batch, 16-mixed, a step part with a random stream of its own, ...) it steps aside: "
        "`mlptrain validate` and summary.json's `cuda_graph` say why.",
    )
    threads: Optional[int] = Field(None, ge=1, description="CPU threads for torch; default the cores this process may use.")
    backprop: Literal["auto", "manual", "autograd"] = Field(
        "auto",
        description="How gradients are computed. manual: backprop written out layer by layer (mlptrain/backprop.py), "
        "no autograd graph, ~15 % off a small model's step; it covers Linear, the elementwise activations and "
        "dropout with cross_entropy, bce or mse (on values), in float32. autograd: loss.backward(). auto: manual where it covers "
        "the setup, else autograd; summary.json says which ran (and, as backprop_why, why autograd).",
    )
    on_nan: Literal["stop", "skip_batch"] = Field(
        "stop",
        description="A NaN or infinite training loss: `stop` the run naming the epoch and step (last.pt keeps the last "
        "good state; checked every logging.step_every steps, free), or `skip_batch`: drop that batch's update and go "
        "on (checks every step, one device sync each; the skips are counted in train/skipped_batches).",
    )
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec, description="Early stopping.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="Checkpoints kept.")

    def check_rows(self, n_train: int) -> None:
        """drop_last with a batch larger than the training split would train on nothing (fit and validate)."""
        if self.drop_last and isinstance(self.batch_size, int) and self.batch_size > n_train:
            raise DataError(  # the data is what is too small: exit code 3, as fit has always said
                f"train.batch_size {self.batch_size} with train.drop_last: the training split has only {n_train} rows, "
                f"so every batch would be dropped; set train.batch_size to at most {n_train} or train.drop_last: false"
            )

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, value: Union[int, str]) -> Union[int, str]:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"batch_size must be at least 1 or 'full', got {value}")
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value: Any) -> Any:
        return str(value) if value in (32, "32", 32.0) else value  # YAML reads `precision: 32` as a number

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return check_device(value)


class LoggingSpec(Section):
    """Where runs go and what TensorBoard gets."""

    runs_dir: str = Field("runs", description="Root of run directories: runs/<name>/<timestamp>/ (relative to the current directory, unlike data paths).")
    tensorboard: bool = Field(True, description="Write TensorBoard event files into the run directory.")
    step_every: int = Field(10, ge=1, description="Log the training loss to TensorBoard every N optimizer steps.")
    histograms_every: int = Field(10, ge=0, description="Weight and gradient histograms every N epochs (0: never; none without TensorBoard).")
    progress: Literal["auto", "bar", "plain", "none"] = Field(
        "auto", description="auto: a live bar on a terminal, one plain line per epoch otherwise."
    )

    USED_BY = {"histograms_every": ("tensorboard", (True,))}
    NEVER = {"histograms_every": (0,)}


class Spec(Section):
    """A whole run: what data, what network, what loss, optimizer and schedule, how to train and log."""

    name: Optional[str] = Field(None, description="Run name (runs/<name>/...); default the config file's stem.")
    data: DataSpec = Field(..., description="Data source, split and scaling.")
    augment: AugmentSpec = Field(default_factory=AugmentSpec, description="Random changes to training batches.")
    regularization: RegularizationSpec = Field(
        default_factory=RegularizationSpec, description="Penalties, a max-norm constraint and weight noise."
    )
    adversarial: AdversarialSpec = Field(
        default_factory=AdversarialSpec, description="Adversarial training: also train on inputs perturbed against the model."
    )
    model: ModelSpec = Field(default_factory=ModelSpec, description="Network architecture.")
    task: TaskName = Field(
        "auto",
        description="Output unit: binary (1 logit, sigmoid), multiclass (K logits, softmax), regression (linear), "
        "multilabel (sigmoid per output); auto infers it from the data.",
    )
    loss: LossSpec = Field(default_factory=LossSpec, description="Training loss.")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="Optimizer.")
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec, description="Learning-rate schedule.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Training loop.")
    logging: LoggingSpec = Field(default_factory=LoggingSpec, description="Run directory and TensorBoard.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (
            not value.strip() or "/" in value or "\\" in value or value in (".", "..") or not value.isprintable()
        ):
            raise ValueError(
                f"name must be a plain directory name (no '/', '\\', '..' or control characters), got {value!r}; "
                "runs go to <logging.runs_dir>/<name>/: pick a name like 'exp1'"
            )
        return value


# ----------------------------------------------------------------------------------------------
# Loading: YAML -> dict -> overrides -> Spec, every failure a one-line ConfigError.


YAML_TAG = "tag:yaml.org,2002:"
PYTHON_TAG = YAML_TAG + "python/"  # !!python/object/apply:os.system [...] and friends: unsafe_load would run them


def _unknown_tag(problem: str) -> Optional[str]:
    """The tag in safe_load's "could not determine a constructor for the tag '...'" (None for other problems)."""
    match = re.search(r"constructor for the tag '([^']*)'", problem)
    return match.group(1) if match else None


BOOL_TAG = YAML_TAG + "bool"


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2's booleans: only true and false (in any case) are booleans.

    YAML 1.1, which PyYAML follows, also reads yes/no/on/off/y/n as booleans, so a class named `yes`
    in a CSV became True in `class_weight: {yes: 2.0}`, `data.categorical: [yes]` or `--set
    data.target=on`. Fields that are booleans still take yes/no (pydantic reads those strings).
    """

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


ConfigLoader.add_implicit_resolver(BOOL_TAG, re.compile(r"^(?:true|false)$", re.IGNORECASE), list("tTfF"))

MAX_DEPTH = 50  # a config nests a few sections deep; PyYAML composes recursively and dies near 1000


class _TooDeep(Exception):
    pass


class _DuplicateKey(yaml.YAMLError):
    """A mapping that gives one key twice: YAML keeps the last silently (a second `model:` drops the first)."""

    def __init__(self, key: str, first: int, again: int):
        super().__init__(f"key '{key}' given twice")
        self.key, self.first, self.again = key, first, again  # 1-based lines


def _check_unique_keys(text: str) -> None:
    """Raise ``_DuplicateKey`` for the first mapping, at any depth, that repeats a key."""
    stack, seen = [yaml.compose(text, Loader=ConfigLoader)], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:  # (an alias repeats a node already walked)
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if (key.tag, key.value) in lines:
                        raise _DuplicateKey(key.value, lines[(key.tag, key.value)], key.start_mark.line + 1)
                    lines[(key.tag, key.value)] = key.start_mark.line + 1
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2's booleans (``ConfigLoader``), refusing (``_TooDeep``) collections
    nested over MAX_DEPTH levels before composing them: their events are streamed first, so a file of ten
    thousand ``[`` costs as much as one of fifty. A key given twice in one mapping is refused too (``_DuplicateKey``)."""
    depth = 0
    for event in yaml.parse(text, Loader=ConfigLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _TooDeep
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    _check_unique_keys(text)
    try:
        loader = ConfigLoader(text)  # a SafeLoader: plain data only
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError:
        raise
    except (ValueError, IndexError, TypeError, OverflowError) as exc:  # PyYAML's constructors on e.g. an empty `!!float`
        raise yaml.YAMLError(f"a tagged value PyYAML cannot build ({type(exc).__name__})") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``."""
    if path.is_dir():
        raise ConfigError(f"{path}: a directory, not a config file; give a YAML file{files_in(path, ('.yaml', '.yml'))}")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; check the path (see `mlptrain init` for a starter)")
    try:
        raw = _safe_load(path.read_text(encoding="utf-8"))
    except _TooDeep:
        raise ConfigError(
            f"{path}: nested too deeply (over {MAX_DEPTH} levels of lists or mappings); a config is a few levels of sections"
        ) from None
    except _DuplicateKey as exc:
        raise ConfigError(
            f"{path}: line {exc.again}: key '{exc.key}' is given twice (also on line {exc.first}); YAML would keep only "
            "the last: merge them into one"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        tag = _unknown_tag(problem) if isinstance(exc, yaml.constructor.ConstructorError) else None
        if tag is not None and tag.startswith(PYTHON_TAG):
            raise ConfigError(
                f"{path}:{where}: Python tags are not allowed (!!{tag[len(YAML_TAG):]}): a config holds plain data, "
                "never Python objects or calls; remove the tag and write the value itself"
            ) from None
        if tag is not None:
            raise ConfigError(f"{path}:{where}: unknown YAML tag '{tag}'; remove it and write the value itself") from None
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem}); fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; give a YAML config") from None
    if raw is None:
        raise ConfigError(f"{path}: the config is empty; it needs at least a `data:` section")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data:, model:, ...), got {article(type(raw).__name__)}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides; values are parsed as YAML (``1e-3``, ``[64, 64]``, ``true``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {_shown(item)}: expected KEY=VALUE, e.g. --set optimizer.lr=0.01")
        key, text = item.split("=", 1)
        parts = override_key(item)
        if not all(parts):
            raise ConfigError(f"--set {_shown(item)}: empty key part in {_shown(key)}; write KEY as section.key, e.g. optimizer.lr")
        try:
            value = _safe_load(text) if text.strip() else ""
        except _TooDeep:
            raise ConfigError(
                f"--set {_shown(item)}: the value is nested too deeply (over {MAX_DEPTH} levels); give a plain value or a short list"
            ) from None
        except yaml.YAMLError as exc:
            if text.strip()[:1] in ("[", "{") or isinstance(exc, _DuplicateKey):  # meant as a list or mapping
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                raise ConfigError(
                    f"--set {_shown(item)}: the value is not valid YAML ({problem}); close its brackets, or quote "
                    "it to mean a string"
                ) from None
            value = text  # a plain string YAML cannot read (`name=a: b`): taken as written
        node: Any = raw
        loc: list[Union[str, int]] = []
        for depth, part in enumerate(parts):
            key: Union[str, int] = _list_index(item, node, parts[:depth]) if isinstance(node, list) else part
            loc.append(key)
            if depth == len(parts) - 1:
                break
            child = node[key] if isinstance(node, list) else node.get(key)
            if child is None:  # not in the file: a list key starts from its default (`model.hidden.0=512`)
                child = node[key] = _default_list(tuple(loc)) if _is_index(parts[depth + 1]) else {}
            elif isinstance(child, str):  # shorthand `loss: huber` grows into {name: huber}
                child = node[key] = {"name": child}
            elif not isinstance(child, (dict, list)):
                where = _printable(".".join(parts[: depth + 1]))
                raise ConfigError(
                    f"--set {_shown(item)}: '{where}' is a value ({_shown(child)}), not a section with keys; "
                    f"set it as a whole: --set {where}=VALUE"
                )
            node = child
        old = node[key] if isinstance(node, list) else node.get(key)
        section = _model_at((*loc, "name"))
        if isinstance(value, str) and isinstance(old, dict) and section is not None and issubclass(section, NamedSection):
            # `--set optimizer=adamw` switches the name and keeps lr and the rest, less the keys only other names read
            value = {**{k: v for k, v in old.items() if _read_by(section, k, value)}, "name": value}
        node[key] = value
    return raw


def _is_index(part: str) -> bool:
    return part.isascii() and part.isdigit()


def _list_index(item: str, items: list[Any], above: list[str]) -> int:
    """The item of a list that ``--set a.b.N=...`` names (``model.hidden.0``), or one line saying why none."""
    where, part, n = _printable(".".join(above)), _printable(override_key(item)[len(above)]), len(items)
    if not n:
        raise ConfigError(f"--set {_shown(item)}: '{where}' is an empty list; set it as a whole: --set {where}=[...]")
    if not _is_index(part):
        raise ConfigError(f"--set {_shown(item)}: '{where}' is a list of {plural(n, 'item')}; name an item by its "
                          f"index, {where}.0 to {where}.{n - 1}, not '{part}'")
    if int(part) >= n:
        raise ConfigError(f"--set {_shown(item)}: '{where}' has {plural(n, 'item')} (indexes 0 to {n - 1}): there is no "
                          f"item {int(part)}; set the whole list instead: --set {where}=[...]")
    return int(part)


def _default_list(loc: tuple[Union[str, int], ...]) -> Any:
    """The default of the list key at ``loc`` as plain data ({} where the key is no list: the index then
    is refused as a key when the spec is validated)."""
    owner = _model_at(loc)
    field = owner.model_fields.get(loc[-1]) if owner is not None and isinstance(loc[-1], str) else None
    default = field.get_default(call_default_factory=True) if field is not None else None
    if not isinstance(default, (list, tuple)):
        return {}
    return [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in default]


def override_key(item: str) -> list[str]:
    """The key path of a ``KEY=VALUE`` override: ``optimizer.lr=0.1`` -> ["optimizer", "lr"]."""
    return item.split("=", 1)[0].strip().split(".")


def _read_by(section: type[Section], key: str, name: str) -> bool:
    """Whether the section's ``key`` still means something once its name is ``name``."""
    by, readers = section.USED_BY.get(key, (None, ()))
    return by != "name" or name in readers


def _model_at(loc: tuple[Any, ...]) -> Optional[type[BaseModel]]:
    """The pydantic model that owns the key at ``loc`` (for "did you mean")."""
    model: Optional[type[BaseModel]] = Spec
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None if not isinstance(part, int) else model
        model = _section_of(model.model_fields[part].annotation)
    return model


def _section_of(annotation: Any) -> Optional[type[BaseModel]]:
    """The section model inside a field's type (``Union[ActivationSpec, list[ActivationSpec]]`` -> ActivationSpec)."""
    return next((t for t in _flatten(annotation) if isinstance(t, type) and issubclass(t, BaseModel)), None)


def _flatten(annotation: Any) -> list[Any]:
    args = get_args(annotation)
    if not args:
        return [annotation]
    out: list[Any] = []
    for a in args:
        out.extend(_flatten(a))
    return out


def _location(err: dict[str, Any], raw: Any) -> tuple[Any, ...]:
    """The key path of an error in the user's terms.

    pydantic puts union branch markers into ``loc`` ("ActivationSpec", "int", "list[str]",
    "literal['full']"); a part is kept when it is a key of the input there or a field of the section
    there (``loss: huber`` becomes ``{name: huber}``), so keys of any spelling ("Data") stay.
    """
    loc, out = err["loc"], []
    node: Any = raw
    model: Optional[type[BaseModel]] = Spec
    for i, part in enumerate(loc):
        if isinstance(part, int):  # a list index (or an integer key)
            out.append(part)
            if isinstance(node, list):
                node = node[part] if -len(node) <= part < len(node) else None
            else:
                node = node.get(part) if isinstance(node, dict) else None
            continue
        field = model.model_fields.get(part) if model is not None else None
        named_key = i == len(loc) - 1 and err["type"] == "invalid_key"  # pydantic's str() of a non-string key
        if not (field is not None or (isinstance(node, dict) and part in node) or named_key):
            continue  # a union branch marker
        out.append(part)
        node = node.get(part) if isinstance(node, dict) else None
        model = _section_of(field.annotation) if field is not None else None
    return tuple(out)


def _printable(text: str) -> str:
    """Keys and values as one line: control characters and line breaks escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _shown(value: Any) -> str:
    """A bad value for a message: its repr, cut short (a 400-digit number or a pasted file stays readable)."""
    text = repr(value)
    return _printable(text if len(text) <= 80 else text[:60] + f"... ({len(text)} characters)")


# A union branch that failed only because the value has the other branch's shape ("a valid list" when a
# dict was given): noise beside the errors inside the branch that fits.
_SHAPE_ERRORS = {"model_type", "model_attributes_type", "dict_type", "list_type", "literal_error"}


def _message(err: dict[str, Any]) -> str:
    msg = err["msg"]
    return _printable(msg[len("Value error, "):] if msg.startswith("Value error, ") else msg)


def _format_error(err: dict[str, Any], loc: tuple[Any, ...]) -> str:
    path = ".".join(_printable(str(p)) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        model = _model_at(loc)
        valid = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6) if loc else []
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(valid)}"
        return f"unknown key '{path}'; {hint}"
    bad = err.get("input")
    if err["type"] == "missing":
        return f"'{path}' is required"
    if err["type"] == "invalid_key":  # YAML's `1: x` or `null: x`; the input is the key
        where = ".".join(_printable(str(p)) for p in loc[:-1]) or "the top level"
        return f"{where}: key {_shown(bad)} is not a name; keys are words like 'data' or 'epochs'"
    if isinstance(bad, (dict, list)):
        return f"{path}: {_message(err)}"
    return f"{path} = {_shown(bad)}: {_message(err)}"


def validate_dict(raw: dict[str, Any], source: str = "config") -> Spec:
    """Validate a plain dict into a Spec or raise one ConfigError naming every bad key."""
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # A union (one activation or a list) reports each branch; keep the most specific one per path.
        locs = [_location(err, raw) for err in errors]
        deeper = {loc[:i] for loc in locs for i in range(len(loc))}  # paths with an error below them
        kept = [(err, loc) for err, loc in zip(errors, locs) if not (err["type"] in _SHAPE_ERRORS and loc in deeper)]
        # one entry per key; the branches of a union that all failed there are joined with "or"
        by_path: dict[tuple[Any, ...], str] = {}
        for err, loc in kept:
            key = (err["type"] == "extra_forbidden",) + loc
            if key not in by_path:
                by_path[key] = _format_error(err, loc)
            elif _message(err) not in by_path[key]:
                by_path[key] += f", or {_message(err)}"
        raise ConfigError(f"{source}: " + "; ".join(by_path.values())) from None


Loc = tuple[Union[str, int], ...]  # a key's place in the spec: ("optimizer", "lr"), ("model", "activation", 1, "slope")


def dotted(loc: Loc) -> str:
    """A key's place as messages write it: model.activation[1].slope."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _yaml_value(value: Any) -> str:
    """A choice as the config writes it: true/false for booleans, the name itself otherwise."""
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class InertKey:
    """A key set away from its default that its section's choice does not read (``momentum: 0.9`` with
    adam): accepted, it would change nothing."""

    key: Loc
    by: Loc  # the key whose value decides
    value: Any
    chosen: Any
    readers: tuple[Any, ...]
    reads: str = ""  # where no list of values reads the key: which do, in words ("only hidden layers read it")
    fix: str = ""  # and what to set then
    choice: str = ""  # where several keys decide together: the choice, in words ("regularization.l1 and l2 = 0")

    def _choice(self) -> tuple[str, str]:
        """The choice made and which choices read the key, in the config's own spelling."""
        if self.choice:
            return self.choice, self.reads
        if self.reads:
            return f"{dotted(self.by)} = {_shown(self.chosen)}", self.reads
        if isinstance(self.chosen, bool):
            return f"{dotted(self.by)}: {_yaml_value(self.chosen)}", f"only {self.by[-1]}: {_yaml_value(not self.chosen)} reads it"
        if self.chosen is None:  # an optional choice left unset (adversarial.method: off)
            verb = "reads" if len(self.readers) == 1 else "read"
            return f"no {dotted(self.by)}", f"only {', '.join(map(_yaml_value, self.readers))} {verb} it"
        verb = "reads" if len(self.readers) == 1 else "read"
        return f"{dotted(self.by)} '{self.chosen}'", f"only {', '.join(map(_yaml_value, self.readers))} {verb} it"

    def _value(self) -> str:
        return _yaml_value(self.value) if isinstance(self.value, bool) else _shown(self.value)

    def error(self) -> str:
        choice, readers = self._choice()
        if self.fix:
            fix = self.fix
        elif isinstance(self.chosen, bool) or len(self.readers) == 1:
            fix = f"set {dotted(self.by)}: {_yaml_value(not self.chosen if isinstance(self.chosen, bool) else self.readers[0])}"
        else:
            fix = "pick one of those"
        return f"{dotted(self.key)} = {self._value()} changes nothing with {choice} ({readers}): remove it, or {fix}"

    def warning(self) -> str:
        choice, readers = self._choice()
        return f"{dotted(self.key)} = {self._value()} is ignored with {choice} from --set ({readers})"


def _choice(section: Section, key: str, name: Optional[str] = None) -> tuple[str, Any, tuple[Any, ...]]:
    """The key that decides whether ``key`` is read, its value, and the values that read ``key``. ``name``
    stands for the section's own name where that is only known later (the task's default loss)."""
    by, readers = section.USED_BY[key]
    return by, (name if by == "name" and name is not None else getattr(section, by)), readers


def _inert_in(section: Section, loc: Loc, name: Optional[str] = None) -> list[InertKey]:
    """The inert keys of one section."""
    found = []
    for key in section.USED_BY:
        by, chosen, readers = _choice(section, key, name)
        value = getattr(section, key)
        default = type(section).model_fields[key].get_default(call_default_factory=True)
        if chosen not in readers and value != default and value not in section.NEVER.get(key, ()):
            found.append(InertKey((*loc, key), (*loc, by), value, chosen, readers))
    return found


def unused_keys(section: Section, path: str, name: Optional[str] = None) -> list[str]:
    """``InertKey.error`` of each key of ``section`` (at ``path``) that its choices do not read."""
    return [k.error() for k in _inert_in(section, tuple(path.split(".")), name)]


def _sections(spec: Spec) -> list[tuple[Section, Loc]]:
    """The sections whose choices decide which of their keys are read, with their places."""
    activations = spec.model.activation
    found: list[tuple[Section, Loc]] = (
        [(a, ("model", "activation", i)) for i, a in enumerate(activations)] if isinstance(activations, list)
        else [(activations, ("model", "activation"))]
    )
    found += [(spec.data, ("data",)), (spec.model.init, ("model", "init")), (spec.optimizer, ("optimizer",)),
              (spec.scheduler, ("scheduler",)), (spec.train.early_stopping, ("train", "early_stopping")),
              (spec.logging, ("logging",)), (spec.loss, ("loss",))]
    found.append((spec.adversarial, ("adversarial",)))
    return found


def _shape_inert(spec: Spec) -> list[InertKey]:
    """Keys away from their defaults that the network's or the batch's shape leaves unread: a model without
    hidden layers has no activation, dropout or norm between layers, nor hidden activations to penalize;
    a full batch leaves no last batch to drop; include_bias has no penalty to add the biases to."""
    model, found = spec.model, []
    if not model.hidden:
        fields = type(model).model_fields
        for key in ("activation", "dropout", "norm"):
            value = getattr(model, key)
            if value != fields[key].get_default(call_default_factory=True):
                shown = ([a.name for a in value] if isinstance(value, list) else value.name) if key == "activation" else value
                found.append(InertKey(("model", key), ("model", "hidden"), shown, [], (),
                                      "only hidden layers read it", "give model.hidden some layers"))
        if spec.regularization.activation_l1:
            found.append(InertKey(("regularization", "activation_l1"), ("model", "hidden"), spec.regularization.activation_l1,
                                  [], (), "only hidden layers read it", "give model.hidden some layers"))
    if spec.regularization.include_bias and not spec.regularization.penalized:
        found.append(InertKey(("regularization", "include_bias"), ("regularization",), True, None, (),
                              "it adds the biases to their penalties", "set regularization.l1 or l2",
                              choice="regularization.l1 and l2 = 0"))
    if spec.train.batch_size == "full" and spec.train.drop_last:
        found.append(InertKey(("train", "drop_last"), ("train", "batch_size"), True, "full", (),
                              "a full batch leaves no last batch to drop", "give train.batch_size a number"))
    return found


def inert_keys(spec: Spec) -> list[InertKey]:
    """The inert keys of every section whose choices are known from the spec alone (the default loss is
    known with the task only: ``tasks.loss_name`` checks the loss then; the task's own: ``task_inert``)."""
    return [k for section, loc in _sections(spec) if section is not spec.loss or spec.loss.name is not None
            for k in _inert_in(section, loc)] + _shape_inert(spec)


def task_inert(spec: Spec, task: str) -> list[str]:
    """Errors for keys away from their defaults that the task found in the data does not read (plan.check)."""
    found = []
    if task != "regression" and not spec.data.scale_target:
        found.append(InertKey(("data", "scale_target"), ("task",), False, task, (), "only regression reads it",
                              "set task: regression if the target holds quantities"))
    if task != "binary" and spec.data.positive_class is not None:
        found.append(InertKey(("data", "positive_class"), ("task",), spec.data.positive_class, task, (),
                              "only binary reads it", "use it with a two-class target (task: binary)"))
    if task not in ("binary", "multiclass") and not spec.data.split.stratify:
        found.append(InertKey(("data", "split", "stratify"), ("task",), False, task, (), "only classification reads it",
                              "set task: binary or multiclass if the target holds classes"))
    return [k.error() for k in found]


def _conflicts(spec: Spec) -> list[str]:
    """Keys that are read but cannot work together."""
    problems = []
    sched = spec.scheduler
    if sched.name in ("cosine", "reduce_on_plateau") and sched.min_lr >= spec.optimizer.lr:
        problems.append(f"scheduler.min_lr = {sched.min_lr:g} is not below optimizer.lr = {spec.optimizer.lr:g}: the lr would "
                        "climb to it; keep min_lr below lr")
    if spec.model.norm == "batch" and spec.train.batch_size == 1:
        problems.append("model.norm = batch cannot normalize batches of one row (train.batch_size = 1): use norm: layer, "
                        "or a larger batch")
    return problems


def _switched_off(inert: list[InertKey], overrides: list[str], file_raw: dict[str, Any]) -> list[InertKey]:
    """The inert keys that a ``--set`` made inert: it changed their choice (``logging.tensorboard=false``
    under a file's ``histograms_every: 20``) and not the key itself, and the file alone does not
    already contradict itself there. Those are a switch on top of a file, not a mistake in it."""
    touched = [tuple(override_key(item)) for item in overrides]

    def hit(loc: Loc) -> bool:
        parts = tuple(map(str, loc))
        return any(t[: len(parts)] == parts or parts[: len(t)] == t for t in touched)

    candidates = [k for k in inert if hit(k.by) and not hit(k.key)]
    if not candidates:
        return []
    try:
        own = {k.key for k in inert_keys(validate_dict(file_raw))}
    except ConfigError:  # the file needs its --set to be whole: the --set made the choice
        own = set()
    return [k for k in candidates if k.key not in own]


def load_spec(path: str | Path, overrides: Optional[list[str]] = None) -> Spec:
    """Read, override and validate a config file. A key that would change nothing is refused, unless a
    ``--set`` switched off what reads it: then it is one warning."""
    path = Path(path)
    overrides = list(overrides or [])
    file_raw = read_yaml(path)
    spec = validate_dict(apply_overrides(copy.deepcopy(file_raw), overrides), str(path))
    inert = inert_keys(spec)
    switched = _switched_off(inert, overrides, file_raw)
    problems = [k.error() for k in inert if k not in switched] + _conflicts(spec)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    for k in switched:
        warnings.warn(ConfigWarning(f"{path}: {k.warning()}"), stacklevel=2)
    if spec.name is None:
        spec.name = path.stem
    # Data paths are relative to the config file; store them absolute so checkpoints work from anywhere.
    base = path.resolve().parent
    for key in ("path", "train_path", "val_path", "test_path", "root"):
        value = getattr(spec.data, key)
        if value:
            setattr(spec.data, key, str(resolve_path(value, base)))
    return spec


def spec_to_dict(spec: Spec) -> dict[str, Any]:
    """Plain-data form of a spec (for config.yaml and checkpoints)."""
    return spec.model_dump(mode="json")


def applied_dict(spec: Spec, task: Optional[str] = None, loss: Optional[str] = None) -> dict[str, Any]:
    """``spec_to_dict`` less the keys that its choices do not read (moons: no n_classes, root or subset;
    adam: no momentum; a classification task: no scale_target): what applies, for `validate` to show.
    ``task`` and ``loss`` as found from the data. It is a config too, and trains as the spec does."""
    out = spec_to_dict(spec)
    for section, loc in _sections(spec):
        name = loss if section is spec.loss else None
        if section is spec.loss and spec.loss.name is None and name is None:
            continue  # the default loss is not known without the task
        node: Any = out
        for part in loc:
            node = node[part]
        for key in section.USED_BY:
            _, chosen, readers = _choice(section, key, name)
            if chosen not in readers:
                del node[key]
    data, split = out["data"], out["data"]["split"]
    if task is not None and task != "regression":
        del data["scale_target"]
    if task is not None and task not in ("binary", "multiclass"):
        del split["stratify"]
    if spec.data.val_path:
        del split["val"]
    if spec.data.test_path or spec.data.name in IMAGE_NAMES:  # an image set's test split is its official one
        del split["test"]
    if "val" not in split and "test" not in split:  # every split is a file of its own
        del data["split"]
    return out


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def resolve_path(value: Optional[str], base: Path) -> Optional[Path]:
    """A path from a config is relative to the config file's directory."""
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the spec for editors' YAML plugins."""
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mlptrain config"
    return schema
