"""Tests of the pure PKI domain, mycert.pki."""
