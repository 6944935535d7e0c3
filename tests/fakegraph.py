"""CUDA graphs faked on the CPU, so that the engine's graph path runs in tests without a GPU.

The engine's ``GraphedStep`` records its step with ``record`` and warms up with ``warm_step``.
Here recording runs nothing and returns the step itself as the "replay" (a real CUDA graph also
runs nothing while it records), warm-up steps run in line, and ``plan.graph_blocker`` is asked as
if the run were on CUDA. What the fake leaves untested is the capture itself: that needs a GPU
(bench/gpu_check.py).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from mlptrain import engine, plan


@contextlib.contextmanager
def fake_cuda_graphs(fail: bool = False) -> Iterator[list[int]]:
    """Yield a list that gets one entry per recording; ``fail``: every recording raises as a capture
    of a host-synchronizing op does."""
    records: list[int] = []
    real_blocker = plan.graph_blocker

    def blocker(*args: Any, **kwargs: Any) -> Any:
        return real_blocker(*args, **{**kwargs, "device": "cuda"})

    def record(body: Callable[[], None]) -> Callable[[], None]:
        if fail:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        records.append(1)
        return body

    saved = plan.graph_blocker, engine.GraphedStep.record, engine.GraphedStep.warm_step
    plan.graph_blocker = blocker
    engine.GraphedStep.record = staticmethod(record)
    engine.GraphedStep.warm_step = staticmethod(lambda body: body())
    try:
        yield records
    finally:
        plan.graph_blocker, engine.GraphedStep.record, engine.GraphedStep.warm_step = (
            saved[0], staticmethod(saved[1]), staticmethod(saved[2]))
