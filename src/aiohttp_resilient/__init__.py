"""Make aiohttp clients survive the network: safe retries, backoff with jitter, Retry-After."""
