"""Developer tools run from the repository root: ``python -m tools.openapi``, ``python -m tools.bench``."""
