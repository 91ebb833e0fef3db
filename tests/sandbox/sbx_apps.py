"""Apps for the runner tests, loaded by ``sandbox run`` in its own subprocesses.

``short_ttl``: the chat app with a 0.5 s heartbeat and a 2 s session TTL, so a
``ttl-exceeded`` outage (1.5 × TTL + heartbeat) fits a run of a few seconds.
"""

import attrs

from examples.chat_fast.app import FAST_CONFIG, build_chat_server

short_ttl = build_chat_server(attrs.evolve(FAST_CONFIG, ping_interval=0.5, ping_timeout=1.5,
                                           session_ttl=2.0))

#: ``partition``: a 0.5 s heartbeat and a 6 s TTL, so an outage longer than the
#: heartbeat and shorter than the TTL fits a run of a few seconds.
short_heartbeat = build_chat_server(attrs.evolve(FAST_CONFIG, ping_interval=0.5, ping_timeout=1.5,
                                                 session_ttl=6.0))
