"""Data-parallel training of y = x·w + b with MindSpore: config, loss, model, step, loop.

Reading order: `config` (what can be set) -> `cluster` (ranks) -> `loss`, `model`, `step` (the
math) -> `loop` (the run) -> `__main__` (the entry point). mindspore is not imported here, so
that `train.cluster` can import mpi4py first.
"""
