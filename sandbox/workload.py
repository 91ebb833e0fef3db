"""What each client of a run does, and what each delivery must look like: the workload API.

A :class:`Workload` describes one client's part in the style of a locust
``User`` — one instance per client, its room, the requests it makes — but it
performs no I/O: the driver (``wscore sandbox run``'s runner, or a locust user
in ``loadtests/``) sends what it returns and checks the replies with it. So
one description serves both tools, and any app's events can be described.

The model a workload fits:

* every client is a member of one room (:attr:`Workload.room`), made so by
  :meth:`Workload.join` before it sends, and again after a lost session;
* :meth:`Workload.publish` wraps a probe text (:mod:`sandbox.probe`) in the
  app's event; the app must deliver it on :attr:`Workload.delivery_event` to
  every *other* member of the sender's room, once, in order, with the text
  :meth:`Workload.delivered_text` finds in the delivery unchanged;
* :meth:`Workload.echo` is a request whose reply must be its payload (an RPC
  answered exactly once, and the barrier of the sandbox's drain).

:attr:`Workload.requests` names every event the workload sends as a request,
so a driver can check before a run that the app answers them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs

__all__ = ["Request", "Workload", "reply_equals"]


def reply_equals(expected: Any) -> Callable[[Any], str | None]:
    """A reply check: None when the reply is ``expected``, else what is wrong."""
    return lambda reply: None if reply == expected else f"unexpected reply {reply!r}"


@attrs.frozen
class Request:
    """One message a client sends: ``event`` with ``payload``, and what its reply must be.

    ``check(reply)`` returns None when the reply is right, else a one-line
    description of what is wrong. A driver may also send a request's event
    without waiting for a reply (a fire-and-forget ``send``).
    """

    event: str
    payload: Any
    check: Callable[[Any], str | None] = attrs.field(default=lambda _reply: None, eq=False)


class Workload:
    """One client's part in a run (module docstring); subclass it for an app's own events.

    ``index`` numbers the clients of a run (or the users of a locust process)
    0, 1, 2 …; ``rooms`` is how many rooms they are spread over.
    """

    #: The event on which published probes are delivered.
    delivery_event: ClassVar[str]
    #: Every event this workload sends as a request (the app must answer each one).
    requests: ClassVar[tuple[str, ...]]

    def __init__(self, index: int, rooms: int) -> None:
        if index < 0 or rooms < 1:
            raise ValueError(f"a workload needs index >= 0 and rooms >= 1, got {index}, {rooms}")
        self.index = index
        self.rooms = rooms

    @property
    def room(self) -> str:
        """This client's room: clients are spread over the rooms round robin."""
        return f"room-{self.index % self.rooms}"

    def join(self) -> Request:
        """The request that makes this client a member of :attr:`room`."""
        raise NotImplementedError

    def publish(self, text: str) -> Request:
        """The message that publishes probe ``text`` to the rest of :attr:`room`."""
        raise NotImplementedError

    def delivered_text(self, payload: Any) -> str | None:
        """The probe text a :attr:`delivery_event` payload carries (None: it carries none)."""
        raise NotImplementedError

    def echo(self, payload: Any) -> Request:
        """A request whose reply must be ``payload`` itself."""
        raise NotImplementedError
