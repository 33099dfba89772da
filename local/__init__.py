"""The local stack: Tagih's template served on one machine with moto, localstripe and fakes."""
