"""Billing accounts: the customer an organization's invoices are addressed to.

An organization may keep several accounts; its first one is its default (the one subscriptions
bill and the one that becomes the Stripe Customer). Which account is the default is kept twice on
purpose: an organization-level pointer whose ``version`` every change to the set of accounts bumps
(so concurrent creates and deletes serialize on it), and ``is_default`` on the account itself (so a
read of one account or of the list needs no second item). Both change in the same transaction.

Deleting the default account promotes the most recently created remaining one, so an organization
with accounts always has a default. The default cannot be deleted while the organization has a
paid subscription (409 ``billing_account_in_use``): invoices are addressed to it. That mirrors
Stripe, where a customer with live subscriptions is the one those subscriptions bill.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Protocol

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from tagih.domain.gateway_names import GatewayName
from tagih.domain.money import Currency, upper_case
from tagih.domain.plan_slugs import FREE_PLAN
from tagih.domain.text import NOT_BLANK, RequestBody

if TYPE_CHECKING:
    from tagih.domain.gateway import Customer

# A subscription in one of these statuses on a plan other than Free is a paid subscription: it has
# been or will be charged, so the method and account behind it must stay (subscriptions own the item).
PAID_SUBSCRIPTION_STATUSES: tuple[str, ...] = ("active", "past_due", "trialing", "incomplete")

# ISO 3166-1 alpha-2, officially assigned codes (tzdata's iso3166.tab, 249 entries).
_ISO_3166_ALPHA_2_CODES = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
    EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
    HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
    LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
    NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
    TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """
ISO_3166_ALPHA_2: frozenset[str] = frozenset(_ISO_3166_ALPHA_2_CODES.split())


def is_paid_subscription(status: str | None, plan: str | None) -> bool:
    return status in PAID_SUBSCRIPTION_STATUSES and plan != FREE_PLAN


def _country(value: str) -> str:
    if value not in ISO_3166_ALPHA_2:
        raise ValueError("Must be an ISO 3166-1 alpha-2 country code, e.g. ID or US.")
    return value


def _email(value: str) -> str:
    try:
        # Loaded on the first email checked, not at import: pydantic.networks pulls in
        # importlib.metadata and email-validator (≈60 ms), which every function importing this
        # module would otherwise pay at cold start.
        from pydantic.networks import validate_email

        return validate_email(value)[1]
    except PydanticCustomError as error:
        raise ValueError("Must be a valid email address.") from error


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("Must not be blank.")
    return value


CountryCode = Annotated[
    str,
    BeforeValidator(upper_case),
    Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2, e.g. `ID`; either case."),
    AfterValidator(_country),
    # Two letters for the schema; which pairs are assigned is `_country`'s list (an enum of 249
    # codes would multiply the generated test cases of every account operation).
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[A-Za-z]{2}$",
            "description": "ISO 3166-1 alpha-2 (an assigned code), e.g. `ID`; either case.",
        }
    ),
]
AccountName = Annotated[
    str, Field(min_length=1, max_length=100, pattern=NOT_BLANK), AfterValidator(_not_blank)
]
Email = Annotated[
    str, Field(min_length=3, max_length=150, json_schema_extra={"format": "email"}), AfterValidator(_email)
]
Phone = Annotated[str, Field(max_length=50)]
Description = Annotated[str, Field(max_length=200)]


class Address(RequestBody):
    country: CountryCode
    line1: Annotated[str, Field(min_length=1, max_length=200, pattern=NOT_BLANK), AfterValidator(_not_blank)]
    line2: Annotated[str, Field(max_length=200)] | None = None
    city: Annotated[str, Field(min_length=1, max_length=100, pattern=NOT_BLANK), AfterValidator(_not_blank)]
    state: Annotated[str, Field(max_length=100)] | None = None
    postal_code: Annotated[
        str, Field(min_length=1, max_length=20, pattern=NOT_BLANK), AfterValidator(_not_blank)
    ]


class GatewayCustomerIds(BaseModel):
    """The account as each gateway's customer, once it exists there."""

    stripe: str | None = None
    midtrans: str | None = None

    def get(self, gateway: GatewayName) -> str | None:
        value: str | None = getattr(self, gateway)
        return value


class AccountDetails(BaseModel):
    """What the caller chooses about an account (create and update)."""

    name: str
    email: str
    phone: str | None = None
    description: str | None = None
    currency: Currency
    address: Address | None = None


class BillingAccount(AccountDetails):
    id: str
    organization_id: str
    gateway_customer_ids: GatewayCustomerIds = Field(default_factory=GatewayCustomerIds)
    is_default: bool = False
    version: int = 1
    created_at: datetime
    updated_at: datetime

    def as_customer(self) -> Customer:
        # the port's dataclasses load only on the charging path
        from tagih.domain.gateway import Customer

        return Customer(
            account_id=self.id,
            organization_id=self.organization_id,
            name=self.name,
            email=self.email,
            phone=self.phone,
        )


class DefaultAccountPointer(BaseModel):
    """The organization-level item naming its default account; its version guards the set of accounts."""

    account_id: str
    version: int


class AccountStore(Protocol):
    def get(self, organization_id: str, account_id: str) -> BillingAccount:
        """``BillingAccountNotFound`` for an unknown id or another organization's."""
        ...

    def list_for_organization(self, organization_id: str) -> list[BillingAccount]: ...

    def default_pointer(self, organization_id: str) -> DefaultAccountPointer | None: ...

    def insert(self, account: BillingAccount, pointer: DefaultAccountPointer | None) -> None:
        """Write a new account. ``pointer`` is what the caller read: None means the account is the
        first and becomes the default. ``VersionConflict`` when the pointer changed meanwhile."""
        ...

    def replace(self, account: BillingAccount, expected_version: int) -> None:
        """Write ``account`` (version already bumped) if the stored one is at ``expected_version``."""
        ...

    def remove(
        self,
        account: BillingAccount,
        pointer: DefaultAccountPointer,
        successor: BillingAccount | None,
    ) -> None:
        """Delete ``account``; when it is the default, ``successor`` becomes the default (or, if
        None, the pointer goes). ``VersionConflict`` when anything read has changed;
        ``BillingAccountInUse`` when deleting the default while a paid subscription exists."""
        ...

    def subscription_is_paid(self, organization_id: str) -> bool: ...

    def set_gateway_customer(
        self, account: BillingAccount, gateway: GatewayName, customer_id: str, now: datetime
    ) -> BillingAccount:
        """Record the gateway customer id if the account is still at ``account.version``."""
        ...


def newest_first(accounts: list[BillingAccount]) -> list[BillingAccount]:
    return sorted(accounts, key=lambda a: (a.created_at, a.id), reverse=True)
