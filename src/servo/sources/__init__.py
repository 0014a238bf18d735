"""Sources: where servo finds servable versions."""
