"""Synthetic, sharded, deterministic data for the y = x·w + b regression job.

`synthetic` makes rows from a counter-based generator; `dataset` cuts them into
micro-batches and wraps them in a sharded `mindspore.dataset.GeneratorDataset`.
"""

from pipeline.dataset import StepSource, eval_arrays, make_train_dataset
from pipeline.synthetic import DataSpec, SyntheticRegression

__all__ = ["StepSource", "DataSpec", "SyntheticRegression", "eval_arrays", "make_train_dataset"]
