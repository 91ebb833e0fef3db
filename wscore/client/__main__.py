"""``python -m wscore.client URL``: the interactive line client (see :mod:`wscore.client.cli`)."""

import sys

from wscore.client.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
