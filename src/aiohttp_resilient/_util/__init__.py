"""Small pieces everything shares: clocks and timers, the logger, redaction, exception notes."""
