"""``python -m wscore …`` is the ``wscore`` command."""

from wscore.cli import main

raise SystemExit(main())
