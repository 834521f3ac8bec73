"""The engines wing: the registry, the Engine base and one module per backend (no measurement)."""
