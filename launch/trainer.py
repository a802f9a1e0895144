"""msrun needs a script path (not `-m`); this is it. Python puts this folder first on sys.path,
which is why the shim lives here and not inside train/, whose module names would then shadow
top-level ones."""

import sys

from train.__main__ import main

sys.exit(main())
