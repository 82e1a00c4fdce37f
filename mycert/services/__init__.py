"""Workflows: each service is one transaction that also writes its audit event."""
