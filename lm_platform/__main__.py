"""`python -m lm_platform check path/to/recipe.yaml` and `python -m lm_platform schema` (see `cli`)."""

import sys

from lm_platform.cli import main

sys.exit(main())
