"""Test support: real processes (OpenID provider, Celery worker) that tests drive."""
