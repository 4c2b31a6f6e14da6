"""souq_identity"""
