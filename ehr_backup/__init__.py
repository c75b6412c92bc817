"""EHR Backup: encrypted, authenticated, streaming backups of an EHR PostgreSQL database."""

__version__ = "0.1.0"
