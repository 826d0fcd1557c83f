"""`python -m llmbasedos.servers.fs`"""

from .server import FSServer

FSServer.main()
