"""Locust scenarios that put a wscore server under load (SPEC §5).

Each scenario is a plain locustfile::

    locust -f loadtests/chat.py --host ws://127.0.0.1:8080/ws
    locust -f loadtests/rpc.py --host ws://127.0.0.1:8080/ws --headless -u 50 -r 10 -t 30s
    locust -f loadtests/reconnect_storm.py --host ws://127.0.0.1:9000/ws   # through a sandbox proxy

:mod:`loadtests.common` holds the shared :class:`~loadtests.common.WsUser`
base class, the custom counters and the command-line options; the scenarios
talk to the server only through the bundled client, as any client would.
See ``docs/loadtests.md``.
"""

__all__: list[str] = []
