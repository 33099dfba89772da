"""What every function's X-Ray Tracer patches.

Powertools' ``Tracer()`` calls X-Ray's ``patch_all``, which imports and patches every library it
knows that happens to be installed (requests, sqlite3, ...): about 35 ms of cold start, measured
with ``make bench``, for libraries Tagih's request paths never load. Tagih's outbound calls all go
through two of them: AWS through botocore, and everything else (Stripe, Midtrans, the tenants'
webhooks) through ``http.client``, which X-Ray calls ``httplib``. Patching those two records every
call the default would have recorded.
"""

from __future__ import annotations

TRACED_LIBRARIES = ("botocore", "httplib")
