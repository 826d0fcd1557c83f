"""`python -m llmbasedos.servers.mail`"""

from llmbasedos.servers.mail.server import MailServer

if __name__ == "__main__":
    MailServer.main()
