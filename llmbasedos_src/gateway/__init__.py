"""gateway"""

from llmbasedos.gateway import native as _native

# The per-call modules come from the mypyc build when it matches their sources (see native.py).
__path__ = _native.search_path(__path__)
