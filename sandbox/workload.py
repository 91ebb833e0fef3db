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
* :meth:`Workload.check_delivery` says what else a delivery must look like
  (default: nothing more);
* :meth:`Workload.rpc` is a request carrying a unique token that the app must
  answer exactly once, with the reply its check accepts (the sandbox's RPCs);
* :meth:`Workload.barrier` is a request whose reply means every frame the
  client sent before it has run (the sandbox's drain; a session runs its
  frames one at a time, in order), so any request without lasting effect fits.

Both default to :meth:`Workload.echo` — a request whose reply must be its
payload — for apps that serve one; an app without an ``echo`` overrides them
(``examples/quickstart/workload.py`` re-joins its room for both).

:attr:`Workload.requests` names every event the workload sends as a request,
so a driver can check before a run that the app answers them all.

``wscore sandbox run --workload MODULE:CLASS`` loads a subclass with
:func:`load_workload`; the chat one (:mod:`sandbox.chat_workload`) is the default.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

__all__ = ["DEFAULT_WORKLOAD", "Request", "Workload", "WorkloadError", "load_workload",
           "reply_equals"]

#: What ``--workload`` defaults to.
DEFAULT_WORKLOAD = "wscore.sandbox.chat_workload:ChatWorkload"


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

    def check_delivery(self, payload: Any) -> str | None:
        """What is wrong with a :attr:`delivery_event` payload besides its text (None: nothing).

        Called for every delivery that carries a probe text; a problem counts the
        delivery as corrupted (e.g. a counter update naming another counter: misrouted).
        """
        return None

    def rpc(self, token: str, filler: str) -> Request:
        """A request the app must answer exactly once, with the reply its check accepts.

        ``token`` is unique in the run; a check that finds it in the reply tells
        a reply that belongs to another request. ``filler`` is free text to vary
        sizes. Default: :meth:`echo` of ``{"rpc": token, "data": filler}``.
        """
        return self.echo({"rpc": token, "data": filler})

    def barrier(self) -> Request:
        """A request without lasting effect, whose reply means the client's earlier frames ran.

        Default: :meth:`echo` of ``{"barrier": index}``.
        """
        return self.echo({"barrier": self.index})

    def echo(self, payload: Any) -> Request:
        """A request whose reply must be ``payload`` itself (for apps that serve one)."""
        raise NotImplementedError(f"{type(self).__name__} has no echo: override rpc() and barrier()")


class WorkloadError(ValueError):
    """``--workload`` does not name a usable :class:`Workload` subclass (one-line message)."""


def load_workload(target: str) -> type[Workload]:
    """Import ``MODULE:CLASS`` (current directory on the path) and return the Workload class.

    Raises :class:`WorkloadError` when it cannot be imported, is not a
    :class:`Workload` subclass, or lacks :attr:`~Workload.delivery_event` or
    :attr:`~Workload.requests`.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise WorkloadError(f"--workload must look like MODULE:CLASS "
                            f"(e.g. {DEFAULT_WORKLOAD}), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise WorkloadError(f"cannot import workload module {module_name!r}: {exc}") from None
    except Exception as exc:
        raise WorkloadError(f"importing workload module {module_name!r} failed: "
                            f"{type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise WorkloadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, Workload)):
        raise WorkloadError(f"{target} is not a subclass of sandbox.workload.Workload")
    delivery = getattr(obj, "delivery_event", None)
    requests = getattr(obj, "requests", None)
    if not isinstance(delivery, str) or not delivery:
        raise WorkloadError(f"{target} sets no delivery_event (the event deliveries arrive on)")
    if not (isinstance(requests, tuple) and requests and all(isinstance(r, str) for r in requests)):
        raise WorkloadError(f"{target} sets no requests (a tuple of the events it sends as "
                            f"requests)")
    return obj
