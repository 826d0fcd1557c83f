"""`python -m llmbasedos.servers.upstream`"""

from llmbasedos.servers.upstream.program import UpstreamProgram

UpstreamProgram.main()
