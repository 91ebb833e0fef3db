"""Locust scenarios that put a wscore server under load (SPEC §5).

Each scenario is a plain locustfile::

    locust -f loadtests/chat.py --host ws://127.0.0.1:8080/ws
    locust -f loadtests/rpc.py --host ws://127.0.0.1:8080/ws --headless -u 50 -r 10 -t 30s
    locust -f loadtests/reconnect_storm.py --host ws://127.0.0.1:9000/ws   # through a sandbox proxy

What the scenarios share, one job per module: :mod:`loadtests.user` (the
``WsUser`` base class), :mod:`loadtests.options` (the command-line options),
:mod:`loadtests.counters` (the custom counters, judged by the guarantee
policy of :mod:`sandbox.guarantees`), :mod:`loadtests.hooks` (``install()``:
the one, explicit registration of locust listeners — importing a module
registers none), :mod:`loadtests.pacing` and :mod:`loadtests.broadcast` (the
probe messages of :mod:`sandbox.probe`). What a user does in the app is a
:class:`sandbox.workload.Workload` (the chat one), as in ``wscore sandbox run``.
The scenarios talk to the server only through the bundled client, as any
client would. See ``docs/loadtests.md``.
"""

__all__: list[str] = []
