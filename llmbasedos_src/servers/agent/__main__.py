"""`python -m llmbasedos.servers.agent`"""

from .server import AgentServer

AgentServer.main()
