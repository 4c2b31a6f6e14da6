"""souq_cart"""
