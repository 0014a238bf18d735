"""The model server: server core, config files, command line, metrics."""
