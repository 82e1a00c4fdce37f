"""MyCert: client certificates for Luxembourg's health professionals."""
