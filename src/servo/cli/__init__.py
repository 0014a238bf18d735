"""The composition root: the `servo` command, its flags, and the server process."""
