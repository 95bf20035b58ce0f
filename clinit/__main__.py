"""`python -m clinit` is the `clinit` command."""

import sys

from .cli import main

sys.exit(main())
