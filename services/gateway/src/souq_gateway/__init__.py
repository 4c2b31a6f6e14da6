"""souq_gateway"""
