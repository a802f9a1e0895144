"""Synthetic, sharded, deterministic data for the y = x·w + b regression job.

`synthetic` makes rows from a counter-based generator; `dataset` groups them into chunks of
optimizer steps per shard and serves them with a sharded `mindspore.dataset.GeneratorDataset`.
"""

from pipeline.dataset import StepSource, eval_arrays, make_train_dataset
from pipeline.synthetic import DataSpec, SyntheticRegression

__all__ = ["StepSource", "DataSpec", "SyntheticRegression", "eval_arrays", "make_train_dataset"]
