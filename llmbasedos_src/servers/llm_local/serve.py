"""Run llama-cpp-python's OpenAI-compatible server (same command line), with weight repacking off by default.

llama.cpp's "extra buffer types" repack weights for AMX/AVX-512 kernels. On virtual machines whose CPUs
advertise AMX without really providing it, the first decode dies with a general protection fault. The plain
CPU kernels work everywhere, so repacking is opt-in: `LLMBDO_LLM_LOCAL_EXTRA_BUFFERS=1`.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["main"]


def main() -> None:
    import llama_cpp.llama_cpp as lib  # the extra is optional: import only when serving
    from llama_cpp.server.__main__ import main as server_main

    if os.environ.get("LLMBDO_LLM_LOCAL_EXTRA_BUFFERS", "").strip().lower() not in {"1", "true", "yes", "on"}:
        defaults = lib.llama_model_default_params

        def model_params() -> Any:
            params = defaults()
            params.use_extra_bufts = False
            return params

        # The library exposes no setting for this field; its Llama class reads these defaults at load.
        lib.llama_model_default_params = model_params
    server_main()


if __name__ == "__main__":
    main()
