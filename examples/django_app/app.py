"""A Django project in one file and the wscore chat on one port (docs/wsgi.md).

* wscore's own listener: ``wscore run examples.django_app.app:server --port 8080``
* gunicorn's gevent worker:
  ``gunicorn -k gevent -w 1 --bind 127.0.0.1:8080 examples.django_app.app:application``

Settings are configured in code and there is no database (``DATABASES = {}``).
``/`` (a page that loads ``/wscore.js`` and chats) and ``/api/status`` (JSON)
are Django views; ``/ws``, ``/healthz`` and ``/wscore.js`` are wscore's. In your
own project, mount ``get_wsgi_application()`` from your ``wsgi.py`` the same way.
Django is a dev dependency of wscore, not a dependency.
"""

from __future__ import annotations

import os

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        # A dev placeholder: a real deployment reads its own secret.
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-a-secret"),
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["127.0.0.1", "localhost", "[::1]"],
        DATABASES={},
        INSTALLED_APPS=[],
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        USE_TZ=True,
    )
    django.setup()

from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from examples.chat.app import build_chat_server
from wscore import WsServer, WsServerConfig

__all__ = ["application", "build", "django_app", "server"]

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Django + wscore on one port</title>
<h1>Django + wscore on one port</h1>
<p id="state">connecting…</p>
<ul id="log"></ul>
<script type="module">
import { WsClient } from "/wscore.js";
const client = new WsClient(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
client.on("chat.new_message", (p) => document.getElementById("log").append(
  Object.assign(document.createElement("li"), { textContent: `${p.sender}: ${p.text}` })));
client.onConnect(async (info) => {
  document.getElementById("state").textContent = info.resumed ? "resumed" : "connected";
  if (!info.resumed) await client.request("room.join", { roomId: "lobby" });
});
await client.connect();
</script>
"""


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE)


def status(request: HttpRequest) -> JsonResponse:
    # A Django view that reads the wscore server in the same process.
    return JsonResponse({"app": "django", "wscore": server.stats()})


urlpatterns = [path("", index), path("api/status", status)]

django_app = get_wsgi_application()


def build(config: WsServerConfig) -> WsServer:
    """The chat server for ``config`` with the Django project mounted on every other path."""
    chat = build_chat_server(config)
    chat.mount(django_app)
    return chat


server = build(WsServerConfig.dev(port=8080))
#: The WSGI entry for gunicorn's gevent worker (one process: sessions live in it).
application = server.wsgi_app()

if __name__ == "__main__":
    server.serve_forever()
