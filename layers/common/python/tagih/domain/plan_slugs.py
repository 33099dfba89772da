"""The catalog's plan slugs the code itself relies on.

Apart from ``catalog.py`` on purpose: billing accounts and stores that only compare a slug import
it from here, without building the catalog's models (cold start).
"""

from __future__ import annotations

FREE_PLAN = "free"  # an organization with no subscription is on it
