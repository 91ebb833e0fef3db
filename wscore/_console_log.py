"""The default log handler of :meth:`wscore.WsServer.serve_forever` (a plain script's first contact).

A library must not configure logging behind the app's back, but ``python
app.py`` that prints nothing (not where it listens, not that it stopped) is
a poor first contact. The compromise, like :func:`logging.basicConfig`: only
when *nothing* is configured — no handler on the ``wscore`` logger or any
ancestor — attach one stderr handler to the ``wscore`` logger alone (never
the root), at INFO, and take it away again when ``serve_forever`` returns.
"""

from __future__ import annotations

import logging

__all__ = ["FORMAT", "install_default_handler", "remove_default_handler"]

#: the same line format ``wscore run`` uses
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _DefaultHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler as ours, with the level it replaced."""

    previous_level = logging.NOTSET


def install_default_handler() -> logging.Handler | None:
    """Attach the default handler if no handler is configured; return it (None: left alone)."""
    logger = logging.getLogger("wscore")
    if logger.hasHandlers():
        return None
    handler = _DefaultHandler()  # stderr
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.previous_level = logger.level
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def remove_default_handler(handler: logging.Handler) -> None:
    """Undo :func:`install_default_handler` (the handler it returned)."""
    logger = logging.getLogger("wscore")
    logger.removeHandler(handler)
    if isinstance(handler, _DefaultHandler) and logger.level == logging.INFO:
        logger.setLevel(handler.previous_level)
    handler.close()
