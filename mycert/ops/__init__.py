"""What operations reads and runs: health, metrics, rate limits, JSON logs, the local nginx.

Nothing here decides business outcomes; views and the admin call in, never the reverse.
"""
