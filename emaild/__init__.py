"""emaild: turns inbound support email into cases."""

__version__ = "0.1.0"
