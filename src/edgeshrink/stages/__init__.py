"""One module per compression technique; each registers a config type and its handler."""
