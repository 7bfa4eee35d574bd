"""Delivery channels, one module each behind ``channels.base.Channel``; see ``registry``."""
