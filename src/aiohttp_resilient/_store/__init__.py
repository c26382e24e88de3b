"""Shared host state: the store interface (``_base.py``), an in-process store (``_memory.py``),
a Redis store (``_redis.py``, its Lua in ``_scripts.py``), the fail-open guard around a store
(``_failover.py``) and the fleet-wide slot limiter built on them (``_fleet.py``)."""
