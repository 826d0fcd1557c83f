"""`python -m llmbasedos.servers.sync`"""

from llmbasedos.servers.sync.server import SyncServer

SyncServer.main()
