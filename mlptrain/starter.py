"""The config `mlptrain init` writes: every section, commented, runnable as is."""

STARTER = """\
# mlptrain starter config: `mlptrain fit THIS_FILE` trains it as is.
# Every key is optional except data.name; `mlptrain schema` prints them all, and
# `mlptrain validate THIS_FILE` checks the file and shows the model without training.

data:
  name: moons          # xor, moons, circles, spirals, blobs, sine, digits, iris, wine,
                       # breast_cancer, diabetes, or a file: csv / npz (then set path: and target:)
  n_samples: 1000      # synthetic sets only
  noise: 0.2
  split: {val: 0.15, test: 0.15, seed: 0}
  scale: standard      # standard | minmax | none, fitted on the training split only

task: auto             # binary | multiclass | regression | multilabel; auto infers it from the data

model:
  hidden: [32, 32]     # [] is logistic / linear regression
  activation: relu     # or {name: leaky_relu, slope: 0.1}, or one per layer: [tanh, relu]
  init: kaiming_uniform
  input_dropout: 0.0   # the notes keep 0.8 of the inputs: 0.2
  dropout: 0.0         # the notes keep 0.5 of the hidden units: 0.5
  norm: none           # none | batch | layer

loss: {}               # default from the task; e.g. {name: hinge, margin: 1.0}

optimizer:
  name: adam           # sgd, adam, adamw, nadam, rmsprop, adagrad, adadelta
  lr: 0.01
  weight_decay: 0.0

scheduler:
  name: none           # step, multistep, exponential, inverse_sqrt, cosine, reduce_on_plateau
  warmup: 0

train:
  epochs: 50
  batch_size: 32       # N, 1 (pure stochastic) or full (full-batch gradient descent)
  seed: 0
  device: auto         # auto | cpu | cuda | cuda:N
  grad_clip: null
  early_stopping:
    monitor: val/loss
    mode: auto
    patience: 10
    min_delta: 0.0
    restore_best_weights: true

logging:
  runs_dir: runs
  tensorboard: true
  histograms_every: 10
"""
