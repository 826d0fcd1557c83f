"""Step kinds that reach outside the appliance: HTTP (and n8n webhooks), Docker."""

from .docker import run_docker
from .http import StepFailed, http_request, post_webhook

__all__ = ["StepFailed", "http_request", "post_webhook", "run_docker"]
