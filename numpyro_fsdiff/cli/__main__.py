"""`python -m numpyro_fsdiff.cli`: the same as `fsdiff`."""

import sys

from . import main

sys.exit(main())
