"""Code of yours in a run: `--model`, `--loss` and `--data` as `MODULE:NAME` import paths, and
the objects `train.main`/`train.fit` take directly. Both doors meet here: an object handed to
`train.main` is recorded under its own import path (`module:qualname`) and looked up by that
path like any other, so a run started from Python resumes, predicts and exports like a CLI run.

A module is found the way `import MODULE` finds it from the folder the job was launched in:
that folder is appended to `sys.path` (after the installed packages, so that a file of yours
named like one of them does not shadow it), and `PYTHONPATH` is honoured as always. The launch
scripts keep the folder (msrun's workers, mpirun's ranks and srun's tasks start in it).

What is refused here (exit 2, one line): a path that does not import, a name the module lacks,
an object that is not callable, a callable that returns the wrong kind of thing. An exception
raised inside your own code is yours to see: `UserCodeFailed` keeps its traceback, and the
entry point logs it and prints its last line, naming your file and line (exit 1).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from train.config import FIELDS, Config, ConfigError, is_import_path

# Objects handed to train.main/train.fit, by the import path recorded for them.
_PROVIDED: dict[str, Any] = {}
_OURS = tuple(str(Path(__file__).resolve().parent.parent / d) + os.sep
              for d in ("train", "pipeline", "launch"))


class UserCodeError(ConfigError):
    """Code of yours that cannot be used as given (exit 2): the message says why."""


class UserCodeFailed(RuntimeError):
    """Your code raised: `where` is its innermost frame in your files, `trace` the traceback
    to log (exit 1)."""

    def __init__(self, what: str, exc: BaseException) -> None:
        self.exc, self.what = exc, what
        self.trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.where = user_frame(exc)
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        super().__init__(f"{what} raised {last}" + (f" ({self.where})" if self.where else ""))


def check_options(cfg: Config) -> None:
    """What goes with `--model`, `--data MODULE:NAME` and `--optimizer`, and what does not
    (ConfigError, exit 2): checked by the plan on the config a run will use."""
    refusals = [
        (cfg.model and not is_import_path(cfg.model), f"model must be MODULE:NAME (a callable "
         f"of yours returning an nn.Cell, e.g. mynet:Net), got {cfg.model!r}"),
        (cfg.model_args and not cfg.model, "--model_args are the keyword arguments of "
         "--model's callable; give --model MODULE:NAME"),
        (cfg.model and cfg.hidden_sizes(), "--hidden builds the built-in MLP; with --model "
         "your network replaces it (pass its widths in --model_args)"),
        (cfg.optimizer == "adamw" and cfg.momentum != FIELDS["momentum"].default, "--momentum "
         "is SGD's; --optimizer adamw uses beta1 0.9, beta2 0.999 and eps 1e-6 (MindSpore's "
         "nn.AdamWeightDecay defaults)")]
    if cfg.user_data:  # (config.yaml holds the file options' defaults: those pass)
        refusals += [(getattr(cfg, k) != FIELDS[k].default, f"--{k} describes a data file; "
                      f"--data {cfg.data} is a source of yours (held-out rows: --eval_fraction)")
                     for k in ("target", "columns", "categorical", "eval_data",
                               "drop_nonfinite")]
        refusals.append((cfg.standardize, f"--standardize true is for data files; --data "
                         f"{cfg.data} is a source of yours, taken as given"))
    for refused, why in refusals:
        if refused:
            raise ConfigError(why)


def _yours(filename: str) -> bool:
    """A file of yours: not this package's, an installed library's or the standard library's."""
    skip = _OURS + tuple({p for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    return not filename.startswith("<") and not os.path.abspath(filename).startswith(skip)


def user_frame(exc: BaseException) -> str:
    """`file:line in function` of the innermost frame of `exc` in a file of yours; else the
    first `In file PATH:LINE` of yours in its message (where MindSpore's graph compiler says a
    network of yours could not be built); "" if neither."""
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if _yours(frame.filename):
            found = f"{frame.filename}:{frame.lineno} in {frame.name}"
    if not found:
        found = next((f"{m[1]}:{m[2]}" for m in re.finditer(r"In file (\S+?):(\d+)", str(exc))
                      if _yours(m[1])), "")
    return found


def _launch_folder_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def path_of(obj: Any, option: str) -> str:
    """The import path `module:qualname` that finds `obj` again, registered so that this
    process uses `obj` itself. A script's own objects (`__main__`) are recorded under the
    script's module name (job.py: `job`), which a resume or `train.predict` imports."""
    if isinstance(obj, str):
        return obj
    if not callable(obj):
        raise UserCodeError(f"{option}: expected a callable (a class or a function) or "
                            f"MODULE:NAME, got {type(obj).__name__}")
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if not main_file:
            raise UserCodeError(f"{option}: {qualname} is defined in an interactive session; "
                                "define it in a module file so that a resume can import it")
        module = Path(main_file).stem
    path = f"{module}:{qualname}"
    if not module or not is_import_path(path):
        raise UserCodeError(f"{option}: {qualname or obj!r} cannot be imported again (a lambda "
                            "or a function defined inside another); define it at the top "
                            "level of a module")
    _PROVIDED[path] = obj
    return path


def with_objects(argv: list[str], **objects: Any) -> list[str]:
    """The command line with `--model`, `--loss`, `--data` for the objects handed to
    train.main/train.fit (each recorded under its import path); one given both ways is
    refused."""
    argv = list(argv)
    for option, obj in objects.items():
        if obj is None:
            continue
        flag = f"--{option}"
        if any(a == flag or a.startswith(flag + "=") for a in argv):
            raise UserCodeError(f"{flag} is given twice: on the command line and to "
                                "train.main/train.fit; give it once")
        argv += [flag, path_of(obj, flag)]
    return argv


def resolve(path: str, option: str) -> Any:
    """The object an import path names (one handed to train.main, or imported now)."""
    if path in _PROVIDED:
        return _PROVIDED[path]
    module_name, _, attr = path.partition(":")
    _launch_folder_on_path()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise UserCodeError(f"--{option} {path}: no module named {e.name!r} (looked in "
                                f"{os.getcwd()} and PYTHONPATH)") from None
        raise UserCodeError(f"--{option} {path}: importing {module_name} failed: "
                            f"{_last_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - whatever the module raises, it does not import
        raise UserCodeError(f"--{option} {path}: importing {module_name} failed: "
                            f"{_last_line(e)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserCodeError(f"--{option} {path}: {module_name} has no {attr!r} "
                                f"({getattr(module, '__file__', module_name)})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserCodeError(f"--{option} {path}: {attr} is a {type(obj).__name__}, not a "
                            "callable (a class or a function)")
    return obj


def _last_line(e: BaseException) -> str:
    where = user_frame(e)
    text = traceback.format_exception_only(type(e), e)[-1].strip()
    return text + (f" ({where})" if where else "")


def call(fn: Any, what: str, kwargs: dict[str, Any], config: Any) -> Any:
    """`fn(**kwargs)`, plus `config=` when fn takes a parameter of that name; a keyword it does
    not take is refused (exit 2), an exception inside it is `UserCodeFailed` (exit 1)."""
    kwargs = dict(kwargs)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or an extension type: call as given
        params = None
    if params is not None:
        if "config" in params:
            kwargs["config"] = config
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = [k for k in kwargs if k not in params and not takes_any]
        if unknown:
            raise UserCodeError(f"{what} takes no argument {unknown[0]!r} (its parameters: "
                                f"{', '.join(params) or 'none'})")
        missing = [n for n, p in params.items() if p.default is p.empty and n not in kwargs
                   and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if missing:
            raise UserCodeError(f"{what} needs argument {missing[0]!r}"
                                + (" (give it in --model_args)" if what.startswith("--model")
                                   else ""))
    try:
        return fn(**kwargs)
    except Exception as e:  # noqa: BLE001 - your code's own error: reported with its traceback
        raise UserCodeFailed(what, e) from e
