"""The command line: aiohttp-resilient bench, diagnose, fetch and serve."""
