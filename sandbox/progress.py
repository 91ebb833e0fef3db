"""The live progress line of long runs (``wscore sandbox run``, the load tests), on a terminal only.

One line, redrawn in place a few times a second while a run goes on::

    sandbox run chaos · sending 12.3 s of 20 s (7.7 s left) · deliveries 1,234 · faults 56
        · resumes 12 · losses so far 0          (one line on the terminal)

Drawn with `rich <https://rich.readthedocs.io>`_ (``pip install 'wscore[sandbox]'``;
in the ``dev`` and ``load`` extras too) and only when the stream is a TTY: a
pipe, a file or a CI log never gets it, and ``--json`` output never contains
it. Without rich the run simply has no progress line (the command still
works from a plain install). The line is *transient*: it is erased when the
run ends, so the report printed after it stands alone.

:func:`format_progress` is pure (tested on values); :class:`LiveLine` draws
from a gevent greenlet — no threads (rich's own auto-refresh thread is off).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

import attrs
import gevent

__all__ = ["LiveLine", "ProgressSnapshot", "format_progress", "rich_available"]

log = logging.getLogger("wscore.sandbox.progress")


@attrs.frozen(kw_only=True)
class ProgressSnapshot:
    """Where a run is: its phase, time in it, and the counts so far."""

    title: str
    phase: str
    elapsed: float  # seconds in this phase
    total: float | None = None  # planned seconds of this phase (None: open-ended)
    deliveries: int = 0
    faults: int = 0
    resumes: int = 0
    losses: int = 0  # losses seen so far (gaps in what receivers got)
    failures: int = 0  # failed requests/connects (load tests); shown when non-zero
    sessions_lost: int = 0  # shown when non-zero


def format_progress(s: ProgressSnapshot) -> str:
    """The progress line for ``s`` (no colour, no newline)."""
    when = f"{s.elapsed:.1f} s"
    if s.total is not None:
        when += f" of {s.total:g} s ({max(0.0, s.total - s.elapsed):.1f} s left)"
    parts = [s.title, f"{s.phase} {when}", f"deliveries {s.deliveries:,}", f"faults {s.faults:,}",
             f"resumes {s.resumes:,}", f"losses so far {s.losses:,}"]
    if s.sessions_lost:
        parts.append(f"sessions lost {s.sessions_lost:,}")
    if s.failures:
        parts.append(f"failures {s.failures:,}")
    return " · ".join(parts)


def rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


class LiveLine:
    """Redraw ``format_progress(source())`` on ``stream`` every ``interval`` s while open.

    A no-op unless ``stream`` is a TTY and rich is installed (:attr:`enabled`).
    ``source`` runs in this process's gevent hub and must not block. Use as a
    context manager, or :meth:`start` / :meth:`stop` (idempotent).
    """

    def __init__(self, source: Callable[[], ProgressSnapshot], *, stream: TextIO | None = None,
                 interval: float = 0.25) -> None:
        self._source = source
        self._stream = stream if stream is not None else sys.stdout
        self._interval = interval
        self._live: Any = None
        self._ticker: gevent.Greenlet[Any, Any] | None = None
        isatty = getattr(self._stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) and rich_available()

    def start(self) -> LiveLine:
        if not self.enabled or self._live is not None:
            return self
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self._stream, highlight=False)
        self._live = Live(console=console, auto_refresh=False, transient=True,
                          redirect_stdout=False, redirect_stderr=False)
        self._live.start()
        self._ticker = gevent.spawn(self._tick)
        return self

    def _tick(self) -> None:
        from rich.text import Text

        while True:
            try:
                line = format_progress(self._source())
            except Exception:  # a progress line must never break the run it shows
                log.debug("progress source failed", exc_info=True)
                line = ""
            self._live.update(Text(line, overflow="ellipsis", no_wrap=True), refresh=True)
            gevent.sleep(self._interval)  # the redraw pace, not synchronisation

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.kill()
            self._ticker = None
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> LiveLine:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
