"""``python -m mlptrain`` runs the same CLI as the ``mlptrain`` console script."""

from mlptrain.cli import run

run()
