"""Verified sending domains on MSC: an owner's domain signed with its own DKIM keys and bounced
through its own return-path subdomain, so that mail from it passes DMARC (README, "Verified sending domains")."""
