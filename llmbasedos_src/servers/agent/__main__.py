"""`python -m llmbasedos.servers.agent`"""

from llmbasedos.servers.agent.server import AgentServer

AgentServer.main()
