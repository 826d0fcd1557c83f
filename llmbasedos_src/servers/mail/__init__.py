"""The mail server: IMAP accounts, messages and calendar invitations, and sending over SMTP."""
