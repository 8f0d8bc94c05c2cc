"""Local chat robots, webhook receiver and SMTP server that enforce the real channels' rules."""
