"""`python -m llmbasedos.servers.mail`"""

from .server import MailServer

if __name__ == "__main__":
    MailServer.main()
