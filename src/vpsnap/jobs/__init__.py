"""The job system: queue transitions, the worker loop, one handler per job type, wake-ups."""
