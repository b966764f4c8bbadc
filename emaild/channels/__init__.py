"""Channels: transports that hand raw bytes and an envelope to the pipeline."""
