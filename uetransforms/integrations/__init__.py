"""Adapters that run :class:`~uetransforms.Protect` on other data engines, beyond one process.

The maths stays in :mod:`uetransforms.core.apply`; an adapter only moves batches in and out, so every
path gives the same bytes for the same bank and input:

* one process: ``Dataset.map(Protect(bank), batched=True)``;
* several CPU processes or GPUs on one machine: ``Dataset.map(Protect(bank, device="cuda"),
  batched=True, with_rank=True, num_proc=N)`` puts worker ``rank`` on ``cuda:{rank % n_gpus}``.
  CUDA cannot be initialised in a forked child, so call
  ``multiprocess.set_start_method("spawn", force=True)`` before ``map`` (``datasets`` uses the
  ``multiprocess`` package, not ``multiprocessing``);
* a stream that does not fit on disk: ``load_dataset(..., streaming=True).map(Protect(bank),
  batched=True)`` and :func:`uetransforms.publishing.streaming.publish_stream`;
* several machines: :func:`uetransforms.integrations.ray.protect` (Ray Data ``map_batches``).

Submodules import their engine lazily: ``import uetransforms.integrations`` needs no Ray.
"""

from __future__ import annotations

__all__ = ["ray"]


def __getattr__(name: str):
    if name == "ray":
        import importlib

        return importlib.import_module(".ray", __name__)
    raise AttributeError(f"module 'uetransforms.integrations' has no attribute {name!r}")
