"""Delivery: the outbox worker, its providers, metrics and provider feedback."""
