"""Dovecot IMAP server started per test session on a loopback port (see the IMAP puller tests)."""
