"""The platform's HTTP service: webhook receivers (client requests come later)."""
