"""An aiosmtpd sink that catches outgoing mail, and SMTP client helpers."""
