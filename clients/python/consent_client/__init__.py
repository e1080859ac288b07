"""Thin Python client for the consent authority (consent.v1)."""
