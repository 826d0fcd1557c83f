"""The fs server: files inside the virtual root, docx, and semantic search over them (semantic/)."""
