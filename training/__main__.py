"""`python -m training` runs the same CLI as `kvserve-train`."""

from training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
