"""The README's robustness tables: a plain, an FGSM-trained and a PGD-trained model of one config,
each scored clean and against FGSM and PGD at several ε, as a Markdown table.

Every model is trained and scored through the CLI, in fresh processes, one after the other:

    .venv/bin/python bench/robustness.py configs/regularization/adversarial.yaml
    .venv/bin/python bench/robustness.py configs/fashion_mnist.yaml --epsilon 0.05,0.1,0.2 --pgd-train-steps 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "mlptrain"]


def fit(config: str, run_dir: Path, sets: list[str]) -> float:
    """Train one model; the seconds `fit` took, start to exit."""
    args = CLI + ["fit", config, "--run-dir", str(run_dir)] + [a for s in sets for a in ("--set", s)]
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def attack(checkpoint: Path, method: str, epsilons: str, steps: int) -> list[dict]:
    """eval --attack's robustness rows: clean first, then each ε."""
    args = CLI + ["eval", str(checkpoint), "--attack", method, "--epsilon", epsilons, "--json"]
    if method == "pgd":
        args += ["--steps", str(steps)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["robustness"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--epsilon", default="0.05,0.1,0.2", help="the ε scored (comma-separated)")
    parser.add_argument("--train-epsilon", type=float, default=0.1, help="the ε the adversarial models train at")
    parser.add_argument("--pgd-train-steps", type=int, default=5)
    parser.add_argument("--eval-steps", type=int, default=10, help="PGD steps of the evaluation attack")
    parser.add_argument("--set", action="append", default=[], help="a config override for every model")
    parser.add_argument("--only", default="plain,fgsm,pgd", help="which models: plain, fgsm, pgd")
    args = parser.parse_args()

    eps = args.epsilon.split(",")
    trained = {
        "plain": ["adversarial.method=null"],
        "fgsm": ["adversarial.method=fgsm", f"adversarial.epsilon={args.train_epsilon}"],
        "pgd": ["adversarial.method=pgd", f"adversarial.epsilon={args.train_epsilon}",
                f"adversarial.steps={args.pgd_train_steps}"],
    }
    names = {"plain": "plain", "fgsm": f"FGSM-trained (ε {args.train_epsilon})",
             "pgd": f"PGD-trained (ε {args.train_epsilon}, {args.pgd_train_steps} steps)"}
    print(f"| model | fit s | clean | {' | '.join(f'FGSM {e}' for e in eps)} | {' | '.join(f'PGD {e}' for e in eps)} |")
    print("|---" * (3 + 2 * len(eps)) + "|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.only.split(","):
            run_dir = Path(tmp) / key
            seconds = fit(args.config, run_dir, args.set + trained[key])
            best = run_dir / "checkpoints" / "best.pt"
            fgsm = attack(best, "fgsm", args.epsilon, args.eval_steps)
            pgd = attack(best, "pgd", args.epsilon, args.eval_steps)
            pct = lambda rows: [f"{100 * r['accuracy']:.1f}" for r in rows[1:]]  # noqa: E731
            print(f"| {names[key]} | {seconds:.0f} | {100 * fgsm[0]['accuracy']:.1f} | "
                  f"{' | '.join(pct(fgsm))} | {' | '.join(pct(pgd))} |", flush=True)


if __name__ == "__main__":
    main()
