"""The server core and what it owns: config files, request logs, warm-up."""
