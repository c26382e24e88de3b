"""The transport under the retries: the connection pool, keep-alive learning, the idle
watchdog, the response class, and aiohttp's private API."""
