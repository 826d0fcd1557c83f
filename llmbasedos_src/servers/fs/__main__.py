"""`python -m llmbasedos.servers.fs`"""

from llmbasedos.servers.fs.server import FSServer

FSServer.main()
