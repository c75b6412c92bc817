#!/usr/bin/env bash
# Start EHR Backup from a fresh clone: install into .venv (first run only), then start the web app.
# With DATABASE_URL unset it runs a demo PostgreSQL cluster of its own with synthetic EHR data.
# When no administrator exists yet, it prints a one-time link that creates one and signs you in.
# EHR_BACKUP_HOST and EHR_BACKUP_PORT choose the address (default 127.0.0.1:8080).
set -euo pipefail
cd "$(dirname "$0")"
host=${EHR_BACKUP_HOST:-127.0.0.1}
port=${EHR_BACKUP_PORT:-8080}
shown=$host
case $host in 0.0.0.0|::) shown=127.0.0.1 ;; *:*) shown="[$host]" ;; esac
url="http://$shown:$port"

# first, before a long install: is the port free? (the server would only say "[Errno 98]" later)
if ! python3 - "$host" "$port" <<'PY'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no obstacle
    try:
        s.bind((host, port))
    except OSError:
        sys.exit(1)
PY
then
  echo "error: port $port on $host is already in use (another EHR Backup, or another program)." >&2
  echo "       Stop that program, or choose another port, e.g.:  EHR_BACKUP_PORT=$((port + 1)) bash start.sh" >&2
  exit 2
fi

stamp=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/ehr-backup ] || [ "$(cat .venv/.installed-from 2>/dev/null)" != "$stamp" ] \
   || ! .venv/bin/python -c "import ehr_backup.web, pages, nicegui" 2>/dev/null; then
  echo "installing into .venv (first run, or the dependencies changed; about a minute)..."
  python3 -m venv .venv
  # one line per package as pip reaches it, so the wait shows progress
  if ! .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -e . 2>&1 \
    | while IFS= read -r line; do
        case $line in
          Collecting*|"Installing collected packages"*|"Successfully installed"*|ERROR*|error*) echo "  $line" ;;
        esac
      done; then
    echo "error: the installation failed (see above)" >&2
    exit 1
  fi
  echo "$stamp" > .venv/.installed-from
fi

echo "starting EHR Backup on $url (Ctrl-C stops it)"
.venv/bin/python -m ehr_backup &
server=$!

stopped() {
  trap - INT TERM
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  echo
  echo "EHR Backup stopped."
  if [ -z "${DATABASE_URL:-}" ]; then
    echo "The demo database keeps running (the next start reuses it); to stop it: .venv/bin/ehr-backup demo --stop"
  fi
  exit 0
}
trap stopped INT TERM

# the "ready" line once the server answers (the demo database may take a while to start the first time)
for _ in $(seq 1 600); do
  if ! kill -0 "$server" 2>/dev/null; then
    wait "$server" && code=0 || code=$?
    echo "error: EHR Backup stopped while starting (exit status $code); see the messages above" >&2
    exit "$code"
  fi
  if .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
       "$url/healthz" 2>/dev/null; then
    echo "ready: EHR Backup answers at $url (Ctrl-C stops it)"
    break
  fi
  sleep 0.5
done
wait "$server" && code=0 || code=$?
[ "$code" -ge 128 ] || exit "$code"  # killed by a signal: the trap above has said what happens next
