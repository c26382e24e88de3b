"""Host health: each host's retry budget, circuit breaker, adaptive limit and rate, and its
slots."""
