"""One base class for bad user input: the CLI prints its one-line message and exits 2."""


class InputError(ValueError):
    """Input the run cannot use (data, --base, preset, output dir); the message says which."""
