"""Periodic work of the embedded server: lease reaper, housekeeping, retention sweep,
snapshot schedules and reconciliation (see ``loop``)."""
