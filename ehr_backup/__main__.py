"""`python -m ehr_backup` starts the web app (pages and REST API in one process)."""

import os
import sys

from ehr_backup.config import Settings
from ehr_backup.errors import BackupError

try:
    _settings = Settings.from_env()
except BackupError as exc:
    sys.exit(f"ehr-backup: error: {exc.message}")
# NiceGUI reads its storage path at import time: keep it under our data directory
os.environ.setdefault("NICEGUI_STORAGE_PATH", str(_settings.data_dir / "nicegui"))

from ehr_backup.web import main

if __name__ in {"__main__", "__mp_main__"}:
    main()
