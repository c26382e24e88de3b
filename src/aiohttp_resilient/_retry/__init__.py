"""Retrying: the policy, the judgement of a failure, the decision, the retry loop, and its two
callers (the middleware and the decorator)."""
