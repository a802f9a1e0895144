"""The model: y_hat = x·w + b (one `nn.Dense`), or an MLP with ReLU hidden layers; initialised
from the seed with NumPy, so that every rank starts identical without a broadcast.

`state_layout` says, without importing MindSpore, which tensors a checkpoint of this model holds
(names, shapes, dtypes): checkpoints are validated against it before anything is loaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import numpy as np

from train.cluster import ending


def _shapes(features: int, hidden: list[int]) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes, as MindSpore names them (`nn.Dense`: weight (out, in))."""
    if not hidden:
        return {"weight": (1, features), "bias": (1,)}
    sizes = [features, *hidden, 1]
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        shapes[f"{2 * i}.weight"] = (n_out, n_in)  # layers 0, 2, 4 ...; ReLUs in between
        shapes[f"{2 * i}.bias"] = (n_out,)
    return shapes


# Optimizer and loss-scaler state beside the parameters, by name prefix or name: SGD's
# momentum buffers and first-step flags, AdamW's moments (train/optim.py).
OPTIMIZER_PREFIXES = {"sgd": ("accum.", "stat."), "adamw": ("adam_m.", "adam_v.")}
STATE_PREFIXES = tuple(p for ps in OPTIMIZER_PREFIXES.values() for p in ps)
STEP_COUNTER = "global_step"
LOSS_SCALE_VALUE, LOSS_SCALE_COUNTER = "loss_scale.value", "loss_scale.counter"
Layout = dict[str, tuple[tuple[int, ...], str]]


def state_layout(features: int, hidden: list[int], loss_scale: str = "none",
                 optimizer: str = "sgd") -> Layout:
    """The training state of the built-in model, known without building it (so a checkpoint
    is checked before MindSpore is imported): see `layout_of`."""
    params = {n: (s, "float32") for n, s in _shapes(features, hidden).items()}
    return layout_of(params, list(params), loss_scale, optimizer)


def layout_of(params: Layout, trained: list[str], loss_scale: str = "none",
              optimizer: str = "sgd") -> Layout:
    """Every tensor of the training state: the network's parameters (`params`, trainable or
    not: a BatchNorm's moving statistics are state too), the optimizer's state for the
    `trained` ones (SGD: momentum `accum.`, first-step flags `stat.`; AdamW: moments
    `adam_m.`, `adam_v.`), its step counter, and the loss scaler's scale (and, dynamic, its
    good-step counter). Not the lr and momentum values, which the config sets at every step."""
    layout: Layout = dict(params)
    for prefix in OPTIMIZER_PREFIXES[optimizer]:
        layout.update({prefix + n: (params[n][0], "float32") for n in trained})
    layout[STEP_COUNTER] = ((1,), "int32")
    if loss_scale != "none":
        layout[LOSS_SCALE_VALUE] = ((), "float32")
    if loss_scale == "dynamic":
        layout[LOSS_SCALE_COUNTER] = ((), "int32")
    return layout


def network_spec(net: Any) -> tuple[Layout, list[str]]:
    """A built network's parameters by checkpoint name, (shape, dtype), and the names of the
    trainable ones; a name used twice is refused (a checkpoint could not tell them apart)."""
    spec: Layout = {}
    for p in net.get_parameters():
        if p.name in spec:
            raise ValueError(f"your network has two parameters named {p.name!r}; give them "
                             "distinct names (a checkpoint keys tensors by name)")
        spec[p.name] = (tuple(int(d) for d in p.shape), str(p.dtype).lower())
    clash = [n for n in spec if n.startswith(STATE_PREFIXES) or n in (
        STEP_COUNTER, LOSS_SCALE_VALUE, LOSS_SCALE_COUNTER)]
    if clash:
        raise ValueError(f"your network's parameter {clash[0]!r} takes a name the optimizer's "
                         "state uses; rename it")
    return spec, [p.name for p in net.trainable_params()]


def trained_parameters(tensors: dict[str, Any]) -> dict[str, Any]:
    """The model's parameters among a checkpoint's tensors (not optimizer or scaler state)."""
    return {k: v for k, v in tensors.items() if not k.startswith(STATE_PREFIXES)
            and k not in (STEP_COUNTER, LOSS_SCALE_VALUE, LOSS_SCALE_COUNTER)}


def initial_params(features: int, hidden: list[int], seed: int,
                   start: tuple[list[float], float] | None = None) -> dict[str, np.ndarray]:
    """Initial values drawn with NumPy from the seed: independent of device, launch order and
    MindSpore's global RNG. Linear: w ~ N(0, 0.1), b = 0, or the given `start` (w, b) (the
    least-squares fit). MLP: He-normal weights, zero biases."""
    if start is not None and not hidden:
        return {"weight": np.asarray(start[0], np.float32).reshape(1, features),
                "bias": np.asarray([start[1]], np.float32)}
    rng = np.random.default_rng([seed, 0x5EED])
    out = {}
    for name, shape in _shapes(features, hidden).items():
        if name.endswith("bias"):
            out[name] = np.zeros(shape, np.float32)
        else:
            std = 0.1 if not hidden else float(np.sqrt(2.0 / shape[1]))
            out[name] = rng.normal(0.0, std, size=shape).astype(np.float32)
    return out


def make_model(features: int, seed: int, hidden: list[int] | None = None,
               start: tuple[list[float], float] | None = None) -> Any:
    """`nn.Dense(features, 1)`, or Dense-ReLU-...-Dense for `hidden` widths, from `seed` (or,
    linear, from `start`)."""
    from mindspore import Tensor, nn

    hidden = hidden or []
    init = initial_params(features, hidden, seed, start)
    if not hidden:
        return nn.Dense(features, 1, weight_init=Tensor(init["weight"]),
                        bias_init=Tensor(init["bias"]))
    sizes = [features, *hidden, 1]
    layers: list[Any] = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Dense(n_in, n_out, weight_init=Tensor(init[f"{2 * i}.weight"]),
                               bias_init=Tensor(init[f"{2 * i}.bias"])))
        if i < len(hidden):
            layers.append(nn.ReLU())
    return nn.SequentialCell(layers)


def mixed_precision(net: Any, level: str, dtype: str) -> Any:
    """`ms.amp.auto_mixed_precision(net, level, dtype)`, writing nothing into the working folder."""
    import mindspore as ms

    if level != "O1":
        return ms.amp.auto_mixed_precision(net, level, getattr(ms, dtype))
    # O1 goes through mindspore.rewrite, which writes the rewritten network's source into
    # ./rewritten_network and imports it from there: the user's folder may be read-only or shared
    # by other runs. Give it a private folder; the graph compiler reads that source again later
    # (inspect.getsource), so the folder lives until the process exits.
    folder = tempfile.mkdtemp(prefix="ms-dp-amp-")
    ending.at_exit(shutil.rmtree, folder, True)  # (an MPI rank skips other exit hooks)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return ms.amp.auto_mixed_precision(net, level, getattr(ms, dtype))
    finally:
        os.chdir(cwd)


def linear_params(model: Any) -> tuple[list[float], float] | None:
    """The learned (w, b) of the linear model as plain floats; None for an MLP."""
    if not hasattr(model, "weight"):
        return None
    return model.weight.asnumpy().ravel().tolist(), float(model.bias.asnumpy()[0])


def format_params(w: list[float], b: float, names: list[str] | None = None) -> str:
    """`w [2.0001]  b 2.9999` (or `w [temp 1.5002, pressure -1.9987]  b ...`) for console
    lines."""
    names = names or [""] * len(w)
    return "w [" + ", ".join(f"{n} {v:.4f}".strip() for n, v in zip(names, w)) + f"]  b {b:.4f}"


def assign_in_graph(params: list[Any], values: list[np.ndarray]) -> None:
    """Write `values` into `params` so that graphs compiled before see them. MindSpore 2.10:
    `Parameter.set_data` (and `assign_value`, eager `ops.assign`) after a jit function has
    compiled changes the host copy only; that function keeps the old values
    (docs/FINDINGS.md). An assign inside a graph updates the device copy they all share."""
    import mindspore as ms
    from mindspore import ParameterTuple, Tensor, ops

    targets, assign = ParameterTuple(params), ops.Assign()  # (ops.assign: deprecated)

    @ms.jit
    def put(new: tuple) -> Any:
        for p, v in zip(targets, new):
            assign(p, v)
        return new[0]

    put(tuple(Tensor(v) for v in values))


def state_tensors(net: Any, optimizer: Any, scaler: Any = None) -> dict[str, Any]:
    """Everything a resume needs besides the manifest: the network's parameters (trainable or
    not), the optimizer's state and step counter, and the loss scale (train/model.py:
    `layout_of`)."""
    out = {p.name: p for p in net.get_parameters()}
    out.update({p.name: p for p in optimizer.get_parameters() if p.name not in out})
    if scaler is not None:
        out[LOSS_SCALE_VALUE] = scaler.scale_value
        if hasattr(scaler, "counter"):
            out[LOSS_SCALE_COUNTER] = scaler.counter
    return out


def restore(tensors: dict[str, Any], ckpt: Any) -> None:
    """Copy a verified checkpoint's tensors into the live parameters (before any graph is
    compiled: train/model.py `assign_in_graph` says why)."""
    from mindspore import Tensor

    for name, p in tensors.items():
        p.set_data(Tensor(ckpt.tensors[name].reshape(p.shape)))
