"""`python -m loadtest` == `kvserve-loadtest`."""

import sys

from loadtest.cli import main

sys.exit(main())
