"""Shared host state: the store interface (``_base.py``), an in-process store (``_memory.py``),
a Redis store (``_redis.py``, its Lua in ``_scripts.py``), the fail-open guard around a store
(``_failover.py``), the fleet-wide slot limiter built on them (``_fleet.py``), the breaker
fleet-wide (``_breaker.py``: the answers' shapes and the in-memory store's breakers), the retry
budget fleet-wide (``_budget.py``) and what ``store=`` arguments make (``_open.py``)."""
