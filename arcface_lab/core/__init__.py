"""The core wing: numpy-only pieces every other wing may use (the host probe, ...)."""
