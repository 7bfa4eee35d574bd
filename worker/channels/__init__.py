"""Delivery channels, one module each behind ``channels.base.DeliveryChannel``; see ``registry``."""
