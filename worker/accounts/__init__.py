"""Connected accounts (Gmail, custom SMTP), the channel each owner prefers, secrets at rest."""
