"""souq_inventory"""
