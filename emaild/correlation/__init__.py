"""Threading: which case an inbound message belongs to, and the tokens that tell."""
