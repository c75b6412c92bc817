"""Destinations beyond the local locations (S3-compatible object stores) and the copies of each backup.

tables.py: the Destination and BackupCopy rows; store.py: add, list, remove destinations (credentials
sealed with the master key); s3.py: the boto3 client, multipart writer and streaming reader; probe.py: the
connection test; fanout.py: one encrypted stream written to several sinks; copies.py: copies recorded,
opened, made later and deleted.
"""
