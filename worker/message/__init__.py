"""The message: headers and body, DKIM signing, the per-recipient return path."""
