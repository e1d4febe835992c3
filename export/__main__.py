"""`python -m export`: same as the `kvserve-export` console script."""

from export.cli import main

raise SystemExit(main())
