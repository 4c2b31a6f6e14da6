"""Souq's thin service platform: what every service needs in the same way, and nothing more."""
