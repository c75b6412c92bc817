"""One exception tree for EHR Backup; each class carries its HTTP status and a message safe to show.

    BackupError (500)
    ├── ConfigError (500)              settings or key material missing / malformed
    ├── InvalidInput (422)             a malformed id, path, option or body
    ├── NotFound (404)                 an unknown backup id, job id or file
    ├── Busy (409)                     another backup/restore holds the database
    ├── Pinned (409)                   the backup is pinned (e.g. a legal hold): unpin it first
    ├── Unauthenticated (401) / Forbidden (403)
    ├── RequestTimeout (408) / TooLarge (413)   a request body too slow or too large
    ├── NotAuthentic (422)             the file failed authentication: tampered, truncated, wrong key
    ├── KeyNotAvailable (422)          the file names a key id that is not configured
    ├── StorageError (507)             location unusable, disk full, not enough free space
    ├── ToolError (500)                pg_dump / psql missing, wrong version, failed
    ├── DatabaseUnavailable (503)      the PostgreSQL server cannot be reached
    ├── RowCountsDiffer (422)          a restored copy does not hold the backup's rows: not swapped in
    ├── Cancelled (409)                the user cancelled the job
    └── AuditError (503)               the audit entry could not be written: the action does not happen
"""

from __future__ import annotations


class BackupError(Exception):
    """Base of every error the service raises; `str()` is safe to show to a user."""

    status = 500
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(BackupError):
    """Settings or key material are missing or malformed."""

    code = "config"


class InvalidInput(BackupError):
    """A malformed id, path, option or request body."""

    status = 422
    code = "invalid"


class NotFound(BackupError):
    """An unknown backup id, job id or file."""

    status = 404
    code = "not_found"


class Busy(BackupError):
    """Another backup or restore of the same database is running."""

    status = 409
    code = "busy"


class Pinned(BackupError):
    """The backup is pinned and cannot be deleted until it is unpinned."""

    status = 409
    code = "pinned"


class Unauthenticated(BackupError):
    """No valid credentials."""

    status = 401
    code = "unauthenticated"


class Forbidden(BackupError):
    """Valid credentials without the needed role."""

    status = 403
    code = "forbidden"


class RequestTimeout(BackupError):
    """The client did not send its request body in time."""

    status = 408
    code = "timeout"


class TooLarge(BackupError):
    """The request body is larger than the configured cap."""

    status = 413
    code = "too_large"


class NotAuthentic(BackupError):
    """The backup file failed authentication (tampered, truncated, corrupt, or a wrong key)."""

    status = 422
    code = "not_authentic"

    def __init__(self, message: str = "backup file is not authentic: it was modified, truncated or "
                 "corrupted, or the key is wrong") -> None:
        super().__init__(message)


class KeyNotAvailable(BackupError):
    """The file was encrypted with a key id that is not configured."""

    status = 422
    code = "key_not_available"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"key {key_id} not available: set BACKUP_ENCRYPTION_KEY (or add it to "
                         f"BACKUP_ENCRYPTION_OLD_KEYS) to the key this backup was made with")
        self.key_id = key_id


class StorageError(BackupError):
    """A location is unusable, full, or has too little free space."""

    status = 507
    code = "storage"


class ToolError(BackupError):
    """pg_dump or psql is missing, has the wrong version, or failed."""

    code = "tool"


class DatabaseUnavailable(BackupError):
    """The PostgreSQL server cannot be reached or refused the login."""

    status = 503
    code = "database_unavailable"


class RowCountsDiffer(BackupError):
    """A restore's table-by-table check failed; `report` holds the comparison."""

    status = 422
    code = "row_counts_differ"

    def __init__(self, message: str, report: dict[str, object]) -> None:
        super().__init__(message)
        self.report = report


class Cancelled(BackupError):
    """The job was cancelled by a user."""

    status = 409
    code = "cancelled"

    def __init__(self, message: str = "cancelled by user") -> None:
        super().__init__(message)


class AuditError(BackupError):
    """The audit entry could not be written, so the action was not carried out."""

    status = 503
    code = "audit"
