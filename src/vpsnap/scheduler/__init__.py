"""Periodic work: the lease reaper now; retention sweeps, schedules and reconciliation later."""
