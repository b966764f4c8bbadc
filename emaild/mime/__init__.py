"""Turning raw RFC 5322 bytes into a ``ParsedMessage``."""
