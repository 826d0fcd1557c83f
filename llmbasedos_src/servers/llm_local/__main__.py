from llmbasedos.servers.llm_local.program import main

main()
