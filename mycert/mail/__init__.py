"""E-mail: the OpenPGP wrapper (the only module importing ``gnupg``), message building,
SMTP transport, and a local mail sink for development."""
