"""A handler imports only what its routes use (DESIGN.md, Layering).

Each function of template.yaml is imported in a fresh interpreter with Lambda's environment (the
bench's child, tracing as deployed). Payment SDKs, templating and the PDF library belong inside
the payment and invoice code paths, so importing any handler must leave them unloaded; JWT
verification belongs to the authorizer alone. ``requests`` is Midtrans' HTTP client: X-Ray's tracer
patches only botocore and ``http.client`` (``tagih.observability``), so nothing else imports it.
"""

from __future__ import annotations

import pytest

from tools.bench import import_handler
from tools.functions import Function, authorizer_functions, load_functions

FUNCTIONS = load_functions()
AUTHORIZERS = authorizer_functions()
PAYMENT_AND_INVOICE_ONLY = ("stripe", "midtransclient", "requests", "jinja2", "fpdf")
AUTHORIZER_ONLY = ("jwt", "cryptography")


@pytest.mark.parametrize("function", FUNCTIONS, ids=[f.logical_id for f in FUNCTIONS])
def test_handler_import_leaves_heavy_libraries_unloaded(function: Function) -> None:
    loaded = set(import_handler(function).modules)
    assert loaded.isdisjoint(PAYMENT_AND_INVOICE_ONLY), (
        f"{function.logical_id} loads {sorted(loaded & set(PAYMENT_AND_INVOICE_ONLY))} at import; "
        "import them inside the code path that uses them"
    )
    if function.logical_id not in AUTHORIZERS:
        extra = sorted(loaded & set(AUTHORIZER_ONLY))
        assert not extra, f"{function.logical_id} loads {extra}; only the authorizer verifies JWTs"


def test_the_template_names_an_authorizer() -> None:
    # The jwt/cryptography exemption comes from the HttpApi's authorizer: it must name a real function.
    assert AUTHORIZERS
    assert AUTHORIZERS.issubset(f.logical_id for f in FUNCTIONS)
