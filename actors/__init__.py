"""wscore's pykka actors (on gevent).

=================  ===========================================================
actor              its one job
=================  ===========================================================
RouterActor        directory of sessions and rooms; routes room traffic
SessionActor       one session's state and numbered stream; runs its handlers
RoomActor          one room's membership; fans a broadcast out, encoded once
ConnectionActor    writes one socket's frames (the reader is a greenlet)
HandlerActor       runs one actor-based controller's handlers, one at a time
=================  ===========================================================

Messages are the frozen attrs values of :mod:`actors.messages`; actors
``tell`` by default. Who may *wait* (``ask``) on whom — the graph has no cycle,
because every actor that is asked never asks anyone::

    connection reader greenlet ──▶ router, session   (open / claim / attach)
    session (handler code)      ──▶ router, room      (rooms.members(); rooms.join()
                                                        to a room with a behaviour)
    handler actor               ──▶ router, room      (the same)
    server API, /healthz        ──▶ router, room
    router, room, connection    ──▶ nobody

A session is never asked by an actor, so a session blocked in a handler can
only delay its own client's attach, never deadlock. A join that a behaviour may
refuse is asked through the router: :class:`~actors.messages.JoinRoom` carries
an ``answer`` the router forwards (never waits on) and the room's actor resolves
after ``on_join``; the room never waits on the session.
"""

# The wscore package first: importing it makes the process gevent-ready (monkey
# patching) before pykka imports threading. It is cheap: the package loads its
# server-side names lazily, so this pulls in no server (tests/test_imports.py).
import wscore  # noqa: F401
from wscore.actors._runtime import GeventActor, GeventFuture
from wscore.actors.connection import ActorWriter, ConnectionActor
from wscore.actors.handler import HandlerActor
from wscore.actors.room import RoomActor
from wscore.actors.router import FindRoom, RouterActor
from wscore.actors.session import SessionActor, SessionEnv

__all__ = [
    "ActorWriter",
    "ConnectionActor",
    "FindRoom",
    "GeventActor",
    "GeventFuture",
    "HandlerActor",
    "RoomActor",
    "RouterActor",
    "SessionActor",
    "SessionEnv",
]

#: Marker proving this ``actors`` package is wscore's (the name is generic; see tests).
WSCORE_PACKAGE = "wscore.actors"
