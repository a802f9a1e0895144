"""The Newton finish applied to the live network: rank 0 takes the built-in linear model's
parameters to the optimum (train/converge.py `finish`, float64 on the host), every rank takes
its float32 result exactly (an all-sum to which the other ranks add zeros, as
`broadcast_parameters` does) and writes it the way compiled graphs see it (`assign_in_graph`).
One rank computes: the arithmetic cannot differ between hosts' BLAS builds, and the other
ranks do not repeat it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from train import converge
from train.model import assign_in_graph, linear_params


class FinishStopped(Exception):
    """Raised by rank 0's `on_pass` when a stop request arrives during the finish."""


def finish_linear(net: Any, cfg: Any, source: Any, cluster: Any,
                  on_pass: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
    """Finish `net` (the built-in linear model) on the source's objective rows; returns what
    was done (objectives in the data's units; ranks other than 0: the method alone), or None
    on every rank when rank 0's `on_pass` raised FinishStopped (the parameters unchanged)."""
    w, b = linear_params(net)
    message = np.zeros(len(w) + 2, np.float32)  # [stopped, weights..., bias]
    done: dict[str, Any] = {"method": "newton"}
    if cluster.is_main:
        unit = source.loss_unit
        try:
            theta, done = converge.finish(
                np.array([*w, b], np.float64), cfg.loss, source.loss_delta(cfg.delta),
                source.objective_rows, converge.l2_weight(cfg),
                lambda record: on_pass({**record, "objective": record["objective"] * unit}))
            message[1:] = theta.astype(np.float32)
        except FinishStopped:
            message[0] = 1.0
        for key in ("objective_before", "objective_after"):
            if key in done:
                done[key] *= unit
    message = cluster.all_sum(message)  # rank 0's values, exactly: the others add zeros
    if message[0] > 0:
        return None
    assign_in_graph([net.weight, net.bias], [message[1:-1].reshape(1, -1), message[-1:]])
    return done


def finish_line(done: dict[str, Any]) -> str:
    """The console line of a finish (rank 0's figures; other ranks' logs: the method)."""
    if "passes" not in done:
        return "finish: rank 0's Newton finish taken"
    return (f"finish: {done['passes']} Newton passes over the objective rows (stopped at "
            f"{done['stopped']}): objective {done.get('objective_before', 0):.6g} -> "
            f"{done.get('objective_after', 0):.6g}")
