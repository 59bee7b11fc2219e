"""Alert delivery by email (SMTP), classified like webhook deliveries."""
