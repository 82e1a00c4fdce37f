"""Date formats per language (``FORMAT_MODULE_PATH``), read day-first everywhere.

Luxembourg reads 12/04/2026 as the 12th of April: Django's English formats are the US
ones (month first, 12-hour clock), so each language gets its own module here. Only the
output formats differ from Django's; input formats keep ISO first, then day-first.
"""
