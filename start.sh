#!/usr/bin/env bash
# Start EHR Backup from a fresh clone: install into .venv (first run only), then start the web app.
# With DATABASE_URL unset it runs a demo PostgreSQL cluster of its own with synthetic EHR data.
# When no administrator exists yet, it prints a one-time link that creates one and signs you in.
set -euo pipefail
cd "$(dirname "$0")"
stamp=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/ehr-backup ] || [ "$(cat .venv/.installed-from 2>/dev/null)" != "$stamp" ] \
   || ! .venv/bin/python -c "import ehr_backup.web, pages, nicegui" 2>/dev/null; then
  echo "installing into .venv (first run, or the dependencies changed)..."
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e . 2>&1 | grep -v "^WARNING: Location" || true
  echo "$stamp" > .venv/.installed-from
fi
echo "starting EHR Backup on http://${EHR_BACKUP_HOST:-127.0.0.1}:${EHR_BACKUP_PORT:-8080} (Ctrl-C stops it)"
exec .venv/bin/python -m ehr_backup
