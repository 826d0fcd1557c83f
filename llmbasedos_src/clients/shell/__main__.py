from llmbasedos.clients.shell.luca import main

main()
