"""The HTTP layer: thin views that read through selectors and write through services.

``portal`` (the professional's pages), ``auth`` (OpenID login), ``pki`` (CRL, CA
certificates, OCSP), ``ops`` (probes, metrics), ``check`` (the mutual-TLS self-check).
"""
