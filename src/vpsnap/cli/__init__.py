"""The ``vpsnap`` command: server processes, operator administration, (later) client commands."""
