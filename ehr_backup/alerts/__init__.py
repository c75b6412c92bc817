"""Alerts: conditions worth telling someone about, their open/resolved state, and the channels that tell.

conditions.py collects facts, state.py decides (a pure function) what to send, channels.py sends (SMTP,
signed webhook), secrets.py keeps channel secrets encrypted, tables.py stores channels, open alerts and
delivery history, service.py ties them to the BackupService.
"""
