"""Small utilities shared across servo."""
