"""One module per command group (see ``vpsnap.cli``); ``admin/`` holds the server's."""
