"""`python -m llmbasedos.servers.sync`"""

from .server import SyncServer

SyncServer.main()
