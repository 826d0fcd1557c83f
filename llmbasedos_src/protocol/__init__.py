"""The llmbasedos wire protocol, free of I/O: JSON-RPC 2.0 messages, error codes and NUL framing."""

from llmbasedos.protocol.decoding import MAX_DEPTH
from llmbasedos.protocol.errors import RPCError
from llmbasedos.protocol.framing import DEFAULT_MAX_FRAME, Frame, NulFrameDecoder, decode_json, encode_frame
from llmbasedos.protocol.messages import (
    Message,
    Notification,
    Request,
    RequestId,
    Response,
    error_response,
    notification,
    parse_message,
    refusal,
    request,
    result_response,
)

__all__ = [
    "DEFAULT_MAX_FRAME", "MAX_DEPTH", "Frame", "Message", "Notification", "NulFrameDecoder", "RPCError", "Request",
    "RequestId", "Response", "decode_json", "encode_frame", "error_response", "notification",
    "parse_message", "refusal", "request", "result_response",
]
