"""`python -m tftrain.report <run or sweep dirs...> [--out DIR]` (tftrain.report.compare)."""

import sys

from tftrain.report.compare import main

if __name__ == "__main__":
    sys.exit(main())
