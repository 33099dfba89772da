"""Orchestration over the pure domain: one module per use-case family, ports passed in."""
