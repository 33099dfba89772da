"""Timer settings are refused when they are read, naming the variable (issue 16 item 7): a
non-increasing ``DUNNING_SCHEDULE`` used to be accepted and then break every trial end."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from tagih.config import settings_from

BASE = {"TABLE_NAME": "tagih-test"}


@pytest.mark.parametrize(
    ("env", "value", "says"),
    [
        ("DUNNING_SCHEDULE", "PT15S,PT15S", "delay 2 (PT15S) is not after delay 1 (PT15S)"),
        ("DUNNING_SCHEDULE", "P3D,P1D", "delay 2 (P1D) is not after delay 1 (P3D)"),
        ("DUNNING_SCHEDULE", "PT0S,PT5S", "delay 1 (PT0S) is not after the first failed charge"),
        ("DUNNING_SCHEDULE", "P1D,,P3D", "comma-separated list"),
        ("DUNNING_SCHEDULE", "P1M", "not an ISO-8601 duration"),
        ("TRIAL_DURATION", "P1M", "not an ISO-8601 duration"),
        ("TRIAL_DURATION", "PT0S", "not a positive duration"),
        ("GRACE_DURATION", "soon", "not an ISO-8601 duration"),
    ],
)
def test_a_timer_setting_that_would_break_a_timer_is_refused_naming_it(
    env: str, value: str, says: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        settings_from({**BASE, env: value})

    assert f"{env}: " in str(refused.value)
    assert says in str(refused.value)


def test_good_timer_settings_are_read_as_durations() -> None:
    settings = settings_from(
        {**BASE, "DUNNING_SCHEDULE": "PT2S,PT4S", "TRIAL_DURATION": "PT8S", "GRACE_DURATION": "P7D"}
    )

    assert settings.retry_delays == (timedelta(seconds=2), timedelta(seconds=4))
    assert settings_from(BASE).retry_delays == tuple(timedelta(days=d) for d in (1, 3, 5, 7))
    assert (settings.trial_duration, settings.grace_duration) == ("PT8S", "P7D")
