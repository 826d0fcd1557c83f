"""servers/agent"""
