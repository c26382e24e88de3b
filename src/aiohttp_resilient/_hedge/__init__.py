"""Hedged requests: a second copy of a slow idempotent call, first answer wins.

``_policy`` (HedgePolicy), ``_delay`` (per-host recent latency and the extra-load bound),
``_race`` (the race between the original and its hedge), ``_middleware`` (the middleware that
runs calls through the race when ``hedge=`` is set).
"""
