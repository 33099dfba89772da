"""The timers a billing service arms (DESIGN.md "Subscription lifecycle"): the port, and the no-op
used where nothing real waits (test clocks drive their organization's time themselves; unit tests).

A service arms a timer BEFORE it commits the state the timer will act on: if arming fails, the
request fails and nothing changed; if the commit fails after arming, the timer fires, re-checks the
stored state and does nothing. Stopping (a reactivated grace period) happens after the commit and
is best effort: a timer that was not stopped finds nothing to do when it fires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tagih.domain.invoices import Invoice
    from tagih.domain.subscriptions import Subscription


class Timers(Protocol):
    def start_trial_timer(self, subscription: Subscription) -> None:
        """The trial_will_end notice, then the trial's end (``trial_ends_at``)."""
        ...

    def start_grace_timer(self, subscription: Subscription) -> None:
        """The end of a cancelled subscription's grace period (``grace_period_ends_at``)."""
        ...

    def stop_grace_timer(self, subscription: Subscription) -> None:
        """Stop the grace timer armed for ``subscription``'s cancellation (it was reactivated)."""
        ...

    def start_incomplete_timer(self, subscription: Subscription) -> None:
        """The expiry of an unpaid first payment (``incomplete_expires_at``)."""
        ...

    def start_dunning_timer(self, invoice: Invoice) -> None:
        """The payment retries of an invoice whose charge failed (from ``next_retry_at``)."""
        ...


class NoTimers:
    """Arms nothing: a test clock runs what falls due itself, in its own time."""

    def start_trial_timer(self, subscription: Subscription) -> None:
        return None

    def start_grace_timer(self, subscription: Subscription) -> None:
        return None

    def stop_grace_timer(self, subscription: Subscription) -> None:
        return None

    def start_incomplete_timer(self, subscription: Subscription) -> None:
        return None

    def start_dunning_timer(self, invoice: Invoice) -> None:
        return None
