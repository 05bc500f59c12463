"""Durable inboxes shared by the HTTP service (writer) and the sensors (readers)."""
