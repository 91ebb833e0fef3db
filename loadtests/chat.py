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
from typing import Any

if not __package__:
    # Loaded by path (`locust -f loadtests/chat.py`): locust puts the working directory and
    # this file's directory on sys.path, not necessarily the repository root.
    _root = str(Path(__file__).resolve().parents[1])
    if _root not in sys.path:
        sys.path.insert(0, _root)

from locust import task

from loadtests.broadcast import BroadcastProbe, send_chat_message
from loadtests.hooks import install
from loadtests.options import MESSAGE_INTERVAL
from loadtests.pacing import Pacer
from loadtests.user import WsUser
from wscore.client import WsClient

install()

__all__ = ["ChatUser"]


class ChatUser(WsUser):
    """Joins one room and chats in it at a constant pace (``--message-interval``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probe = BroadcastProbe(self, self.workload.delivery_event)
        # Pacing keeps the send rate fixed whatever the ack latency; built per instance
        # because the interval is a command-line option, unknown at import time.
        self._pacer = Pacer(MESSAGE_INTERVAL.get(self.environment))

    def wait_time(self) -> float:
        return self._pacer.wait_time()

    def setup_client(self, client: WsClient) -> None:
        client.on(self.workload.delivery_event, self.probe.on_message)

    def on_start(self) -> None:
        super().on_start()
        self.join_room()
        self._pacer.stagger()

    @task
    def chat(self) -> None:
        send_chat_message(self, self.probe)

