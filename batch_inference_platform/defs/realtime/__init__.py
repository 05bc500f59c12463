"""Real-time integration: event windows, batch insights, the Redis recommendation cache."""
