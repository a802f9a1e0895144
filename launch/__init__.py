"""The launch scripts, installed with the package as `train._launch` (setup.cfg): `python -m
train.launch --path` prints where they are, `python -m train.launch msrun ...` runs one. This
folder of the repository is their source; nothing here is imported."""
