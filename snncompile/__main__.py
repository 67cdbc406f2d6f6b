"""``python -m snncompile ARGS`` is ``snn-compile ARGS``."""

import sys

from snncompile.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
