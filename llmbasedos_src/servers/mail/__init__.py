"""servers/mail"""
