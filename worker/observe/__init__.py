"""Logging and the delivery metrics shared through Redis."""
