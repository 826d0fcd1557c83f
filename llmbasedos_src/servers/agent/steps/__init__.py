"""Step kinds that reach outside the appliance: HTTP (and n8n webhooks), Docker."""

from llmbasedos.servers.agent.steps.docker import run_docker
from llmbasedos.servers.agent.steps.http import StepFailed, http_request, post_webhook

__all__ = ["StepFailed", "http_request", "post_webhook", "run_docker"]
