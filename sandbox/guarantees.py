"""The delivery-guarantee policy: one, for ``wscore sandbox run`` and the load tests alike.

Each tool gathers :class:`Evidence` its own way — the sandbox's ledger sees
every send and every receipt of a run, the load tests' probes only what each
receiver can tell on its own — and :func:`breaches` says which of it breaks
the promise (the session outlives the connection: every message, in order,
exactly once). A breach fails the run (exit code 1).

**Breaches**

========================= ==================================================================
``lost``                  an expected delivery that never came and that no session loss the
                          client reported explains (the sandbox: the ledger's silent losses;
                          the load tests: a gap in a sender's probes)
``duplicated``            a message delivered twice to one receiver (a handler ran twice, or
                          a replay was not de-duplicated)
``reordered``             a sender's messages delivered out of order to one receiver
``corrupted``             a delivery that is not what was sent, or reached a non-member
``stream_gaps``           ``ClientStats.gaps``: the server's numbered stream skipped ``s``
``stream_duplicates``     ``ClientStats.duplicates_dropped``: the server sent a frame again the
                          client already had; the client dropped it (the app saw it once) but
                          a resume replays only what follows ``last_seq`` (SPEC §3), so the
                          wire contract broke
``stray_replies``         replies no request can account for — a request answered twice
                          (see below)
``wrong_replies``         a reply that is not the one its request must get
``unanswered``            a request never answered and never failed, though the run waited
========================= ==================================================================

**Not breaches**

* A *late* reply: a request gave up (timed out, its caller was stopped, the
  client closed) and its reply came after. The request's failure is reported
  where it happened (a failed request), never as a loss or a duplicate.
* A message the server *refused* (``sys.error``: rate limit, validation …): it
  was never published and the sender was told (:meth:`sandbox.probe.ProbeSender.refused`).
* A session loss the client reported (1006): honest — the deliveries it took
  along are named, not silent. Whether the run fails for it depends on what it
  expects (``sandbox run --expect-session-loss``; the load tests report it as a
  failed ``RECONNECT resume``).

**Unmatched replies.** ``WsClient.stats().unmatched_replies`` counts every
reply or error that no pending request waits for: the late replies above *and*
second replies. One client cannot tell them apart, but each request that gave
up can leave at most one late reply, so per client
``stray = max(0, unmatched_replies - requests that gave up)``
(:func:`stray_replies`) are second replies for certain: a duplicate, a breach.
Counted per client, never summed first (one client's timeouts must not hide
another's duplicates).
"""

from __future__ import annotations

import attrs

__all__ = ["BREACHES", "Evidence", "ReplyAccount", "breaches", "stray_replies"]

#: Every breach, with what it means (the order reports list them in).
BREACHES: dict[str, str] = {
    "lost": "deliveries lost silently",
    "duplicated": "duplicate deliveries",
    "reordered": "deliveries out of order",
    "corrupted": "corrupted or misrouted deliveries",
    "stream_gaps": "gaps in the server's numbered stream",
    "stream_duplicates": "server frames sent again after the client had them",
    "stray_replies": "replies no request accounts for (a request answered twice)",
    "wrong_replies": "replies that are not their request's",
    "unanswered": "requests never answered and never failed",
}


@attrs.frozen(kw_only=True)
class Evidence:
    """What a run saw, counted (see the module docstring for each name)."""

    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    stream_gaps: int = 0
    stream_duplicates: int = 0
    stray_replies: int = 0
    wrong_replies: int = 0
    unanswered: int = 0


def breaches(evidence: Evidence) -> dict[str, int]:
    """The broken guarantees in ``evidence`` (name → count, in :data:`BREACHES` order); {} if none."""
    found = attrs.asdict(evidence)
    return {name: found[name] for name in BREACHES if found[name]}


def stray_replies(unmatched_replies: int, requests_given_up: int) -> int:
    """Replies one client got that no request accounts for (module docstring)."""
    return max(0, unmatched_replies - requests_given_up)


class ReplyAccount:
    """One client's :func:`stray_replies`, as a monotonic count for counters that only grow.

    A request that gives up *after* a duplicate reply was counted cannot take
    the breach back: the count only rises.
    """

    def __init__(self) -> None:
        self.given_up = 0
        self.stray = 0

    def gave_up(self) -> None:
        """A request of this client stopped waiting (timeout, caller stopped, client closed)."""
        self.given_up += 1

    def update(self, unmatched_replies: int) -> int:
        """Fold the client's current ``unmatched_replies``; return the new stray replies."""
        now = max(self.stray, stray_replies(unmatched_replies, self.given_up))
        grown, self.stray = now - self.stray, now
        return grown
