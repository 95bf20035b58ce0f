"""`python -m clinit` is the `clinit` command."""

import sys

from .cli import main

if __name__ == "__main__":  # importing the module (pkgutil walks) runs nothing
    sys.exit(main())
