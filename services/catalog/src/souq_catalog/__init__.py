"""souq_catalog"""
