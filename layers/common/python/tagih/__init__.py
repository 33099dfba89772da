"""Tagih: the shared layer of the billing backend."""
