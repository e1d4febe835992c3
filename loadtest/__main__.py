"""`python -m loadtest` == `kvserve-loadtest`."""

import sys

from loadtest.cli import main

if __name__ == "__main__":  # --workers spawns processes that import this module again
    sys.exit(main())
