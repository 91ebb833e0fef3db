"""The Flask example with its sessions in Redis, for gunicorn with several workers.

``gunicorn -k gevent -w 2 'tests.examples.gunicorn_redis_app:make("redis://127.0.0.1:PORT/0")'``
(gunicorn calls ``make`` in each worker's import of the app): every worker is a
node of its own (``node_id`` made per process), all share sessions and rooms
through that Redis. Used by ``test_wsgi_gunicorn_shutdown.py``.
"""

from __future__ import annotations

from examples.flask_app.app import build
from wscore import WsServerConfig
from wscore.wsgi import WsgiEntry


def make(redis_url: str) -> WsgiEntry:
    return build(WsServerConfig.dev(redis_url=redis_url)).wsgi_app()
