"""Real-time integration: journey orchestrator events aggregated in tumbling windows, batch
insights and next-best actions, and a Redis cache of them for real-time reads."""
