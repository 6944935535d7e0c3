# One command each: `make demo` (install if needed, train, evaluate) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install bytecode demo test docs bench clean

install: $(STAMP)

# torch, torchvision and hypothesis are pinned in constraints.txt; pyproject.toml keeps ranges.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	$(MAKE) --no-print-directory bytecode
	touch $(STAMP)

# An editable install leaves the package uncompiled, and where PYTHONDONTWRITEBYTECODE is set (as in
# many containers) every command then compiles mlptrain from source: 40-60 ms of a 0.5 s budget
# for `mlptrain validate`. Python reads these .pyc files only while they match their sources.
bytecode:
	$(BIN)/python -m compileall -q mlptrain

demo: install
	$(BIN)/mlptrain fit configs/quickstart.yaml --run-dir runs/quickstart/demo-$$(date +%Y-%m-%d_%H-%M-%S)
	$(BIN)/mlptrain eval $$(ls -td runs/quickstart/demo-* | head -1)/checkpoints/best.pt
	@echo "TensorBoard: $(BIN)/mlptrain tensorboard runs   (then open http://127.0.0.1:6006/)"

test: install
	$(BIN)/python -m pytest -q

# mlptrain fit vs an idiomatic PyTorch loop, scikit-learn and the matmul floor (bench/README.md);
# ARGS passes options on: make bench ARGS="--only digits --repeat 5".
bench: install bytecode
	$(BIN)/python bench/bench.py $(ARGS)

# Regenerate the README's config reference from the pydantic models.
docs: install
	$(BIN)/python -m mlptrain.docs README.md

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
