"""souq_cli"""
