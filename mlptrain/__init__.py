"""mlptrain: train multi-layer perceptrons from one YAML file."""

__version__ = "0.1.0"
