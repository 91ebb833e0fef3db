"""Chat rooms under load: users spread over K rooms, each chatting at a steady pace.

    locust -f loadtests/chat.py --host ws://127.0.0.1:8080/ws --rooms 4 --message-interval 1
    locust -f loadtests/chat.py --host ws://127.0.0.1:8080/ws --headless -u 50 -r 10 -t 30s

Needs the chat example's events (``wscore run examples.chat.app:server``):
each user joins room ``room-<i mod K>`` (``WS room.join``), then every
``--message-interval`` seconds (starting at a random phase, so users do not
send in lockstep) sends a numbered, timestamped
``chat.message`` (``WS chat.message``: time to the ack). Every
``chat.new_message`` the other members receive is a ``BROADCAST
chat.new_message`` entry whose response time is the delivery latency (send →
receiver's callback) and which fails if a sender's messages arrive out of
order, twice or with one missing. With N users the broadcast rate is about
N × (N/K − 1) / interval messages per second.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # loaded by path (`locust -f`): put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locust import task

from wscore.loadtests.broadcast import RoomChatter
from wscore.loadtests.hooks import install

install()

__all__ = ["ChatUser"]


class ChatUser(RoomChatter):
    """Joins one room and chats in it at a constant pace (``--message-interval``)."""

    @task
    def chat(self) -> None:
        super().chat()
