"""msrun needs a script path (not `-m`); this is it. Python puts this folder first on sys.path,
which is why the shim lives here and not inside train/, whose module names would then shadow
top-level ones. It imports the `train` of the checkout it belongs to, not whichever one is
installed (an editable install of another checkout would otherwise run silently)."""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # this checkout, not launch/

from train.__main__ import main  # noqa: E402 - after the path is set

sys.exit(main())
