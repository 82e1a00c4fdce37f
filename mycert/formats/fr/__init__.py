"""Formats of this language; see ``mycert/formats/__init__.py``."""
