"""gateway/llm"""
