"""The Newton finish applied to the live network: the built-in linear model's parameters read,
taken to the optimum by train/converge.py `finish` (float64, on every rank alike), and written
back the way compiled graphs see them (`assign_in_graph`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from train import converge
from train.model import assign_in_graph, linear_params


def finish_linear(net: Any, cfg: Any, source: Any,
                  on_pass: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Finish `net` (the built-in linear model) on the source's objective rows; returns what
    was done, objectives in the data's units. `on_pass` gets each pass's record (data units)."""
    unit = source.loss_unit
    w, b = linear_params(net)
    theta, done = converge.finish(
        np.array([*w, b], np.float64), cfg.loss, source.loss_delta(cfg.delta),
        source.objective_rows, converge.l2_weight(cfg),
        lambda record: on_pass({**record, "objective": record["objective"] * unit}))
    assign_in_graph([net.weight, net.bias], [theta[:-1].reshape(1, -1).astype(np.float32),
                                             theta[-1:].astype(np.float32)])
    for key in ("objective_before", "objective_after"):
        if key in done:
            done[key] *= unit
    return done
