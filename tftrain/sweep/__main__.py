"""`python -m tftrain.sweep <sweep dir>`: rebuild a sweep's summaries (tftrain.sweep.summary)."""

import sys

from tftrain.sweep.summary import main

if __name__ == "__main__":
    sys.exit(main())
