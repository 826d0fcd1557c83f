"""servers/sync"""
