"""Sharded, deterministic rows for the regression job: synthetic or from a file.

`synthetic` makes rows from a counter-based generator; `files` reads a file of rows in an order
drawn from (seed, epoch); `dataset` groups either into chunks of optimizer steps per shard and
serves them with a sharded `mindspore.dataset.GeneratorDataset`; `convert` turns CSV, .npz and
MindRecord files into the .npy form the pipeline maps into memory.

Importing this package does not import MindSpore (the dataset module does so when a dataset is
made), so that configs and data files can be checked before any process group starts.
"""

from pipeline.dataset import StepSource, eval_chunks, make_train_dataset
from pipeline.spec import DataSpec
from pipeline.synthetic import SyntheticRegression, SyntheticStream

__all__ = ["StepSource", "DataSpec", "SyntheticRegression", "SyntheticStream", "eval_chunks",
           "make_train_dataset"]
