"""``python -m sandbox._config_probe MODULE:ATTR``: print the app's config as one JSON line.

Why a subprocess: ``sandbox run`` needs the app's heartbeat and session TTL
*before* it starts anything (to fit the fault profile), but the runner itself
talks to wscore only as clients do — it never imports the user's module. This
probe imports it in a throw-away process with :func:`wscore.cli.load_server`
(the same loader ``wscore run`` uses; the server is not started) and prints
the config fields the runner needs. Exit status 2 with one line on stderr when
the target cannot be loaded.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

__all__ = ["CONFIG_FIELDS", "main"]

#: The WsServerConfig fields the runner reads.
CONFIG_FIELDS = ("path", "ping_interval", "ping_timeout", "session_ttl", "require_auth",
                 "rate_limit", "max_buffered_messages")


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m sandbox._config_probe MODULE:ATTR\n")
        return 2
    from wscore.cli import TargetError, load_server
    from wscore.errors import ConfigError

    try:
        config = load_server(argv[0]).config
    except (TargetError, ConfigError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    # The runner reads this line from the pipe (a protocol, not logging).
    sys.stdout.write(json.dumps({name: getattr(config, name) for name in CONFIG_FIELDS}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
