#!/usr/bin/env bash
# Start EHR Backup from a fresh clone: install into .venv, start the demo database when DATABASE_URL is
# unset, make a backup, verify it and restore it, then show what is there.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/ehr-backup ]; then
  echo "installing into .venv (first run only)..."
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e . 2>&1 | grep -v "^WARNING: Location" || true
fi
EB=.venv/bin/ehr-backup
if [ -z "${DATABASE_URL:-}" ]; then
  "$EB" demo
fi
id=$("$EB" create --description "first backup" --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$EB" verify "$id"
"$EB" restore "$id" --yes
"$EB" list
echo
echo "Try: $EB --help"
