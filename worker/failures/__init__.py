"""Failures a product shows its users: the reasons of send-time failures (in the bounce
vocabulary, ``send_reasons``) and resending a failed job (``resend``)."""
