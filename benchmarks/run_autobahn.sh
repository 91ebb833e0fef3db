#!/usr/bin/env bash
# RFC 6455 conformance of wscore's WebSocket layer (Autobahn|Testsuite).
#
# Starts examples/autobahn_echo.py (wscore's transport, raw echo) on a free
# loopback port, runs the Autobahn fuzzing client against it (cases 1-7, 9, 10
# by default), stops the echo app and exits with the testsuite runner's code:
# 0 when nothing FAILED, 1 when a case failed, 2 on a setup/run error.
# The last line of output is the runner's verdict:
#   autobahn: N ok, N non-strict, N informational, N unimplemented, N failed
#
# Usage: benchmarks/run_autobahn.sh [run.sh options, e.g. --no-perf, --cases 6.*, -q]
# Environment:
#   AUTOBAHN_RUNNER  the testsuite runner, required: a script that wraps Autobahn|Testsuite's
#                    `wstest -m fuzzingclient` (Python 2) with this interface:
#                    `RUNNER --install-only`, `RUNNER --agent NAME [options] URL`, exit 0/1/2
#                    and the verdict line above as its last line. Not part of this
#                    repository; docs/conformance.md says how to get or write one.
#   PYTHON           the interpreter with wscore installed (default: .venv/bin/python, else python3)
# Too slow for `make test` (about 20 s once the testsuite is installed, plus a
# first-time install of about 30 s). See docs/conformance.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNNER=${AUTOBAHN_RUNNER:-}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
if [[ -z "$RUNNER" ]]; then
  echo "run_autobahn.sh: set AUTOBAHN_RUNNER to an Autobahn|Testsuite runner (see docs/conformance.md)" >&2
  echo "autobahn: error: no runner"; exit 2
fi
[[ -x "$RUNNER" ]] || { echo "run_autobahn.sh: runner not executable: $RUNNER (AUTOBAHN_RUNNER)" >&2; echo "autobahn: error: no runner"; exit 2; }

# Install the testsuite first so its one-off setup time does not count against the app.
"$RUNNER" --install-only >&2 || { echo "autobahn: error: testsuite install failed"; exit 2; }

WORK=$(mktemp -d /tmp/wscore-autobahn.XXXXXX)
APP_PID=''
cleanup() {
  if [[ -n "$APP_PID" ]] && kill -0 "$APP_PID" 2>/dev/null; then
    kill -TERM "$APP_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$APP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$APP_PID" 2>/dev/null
    wait "$APP_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --port 0: the kernel picks a free port; the app prints the URL it bound on its first line.
(cd "$ROOT" && exec "$PYTHON" -m examples.autobahn_echo --host 127.0.0.1 --port 0) \
  >"$WORK/app.out" 2>"$WORK/app.err" &
APP_PID=$!

URL=''
for _ in $(seq 100); do   # up to 10 s for the app to start
  URL=$(sed -n 's/^autobahn_echo listening on \(ws:\/\/[^ ]*\)$/\1/p' "$WORK/app.out" 2>/dev/null | head -n1)
  [[ -n "$URL" ]] && break
  kill -0 "$APP_PID" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$URL" ]]; then
  echo "run_autobahn.sh: the echo app did not start:" >&2
  tail -n 20 "$WORK/app.err" >&2
  echo "autobahn: error: echo app did not start"
  exit 2
fi
echo "run_autobahn.sh: wscore echo app (pid $APP_PID) on $URL" >&2

"$RUNNER" --agent wscore "$@" "$URL"
RC=$?
if ! kill -0 "$APP_PID" 2>/dev/null; then
  echo "run_autobahn.sh: the echo app died during the run:" >&2
  tail -n 20 "$WORK/app.err" >&2
  [[ $RC -eq 0 ]] && RC=2
fi
exit $RC
