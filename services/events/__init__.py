"""The events service: one stream of cluster events (PULL → PUB, recent history)."""
