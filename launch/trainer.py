"""msrun needs a script path (not `-m`); this is it. Python puts this folder first on sys.path,
which is why the shim lives here and not inside train/, whose module names would then shadow
top-level ones. From a checkout it imports the `train` of that checkout, not whichever one is
installed (an editable install of another checkout would otherwise run silently); installed
(train/_launch/), the package as installed."""

import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == _here:
    del sys.path[0]  # this folder must not shadow anything (not there: PYTHONSAFEPATH was set)
_root = _here.parent
if (_root / "train" / "__init__.py").is_file():
    sys.path.insert(0, str(_root))  # this checkout

from train.cli import fit  # noqa: E402 - after the path is set

fit(sys.argv[1:])  # `msdp fit`: the stop signals first, the run, the ordered end of a rank
