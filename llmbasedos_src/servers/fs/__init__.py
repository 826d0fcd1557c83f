"""servers/fs"""
