"""Every use of a dependency's private or unstable API, in one place.

One module per dependency (``vllm``, ``ray``, ``sse_starlette``, ``lancedb``).
Each internal llmserve relies on sits behind one named, typed function (or a
small class) here, and has a canary test in ``tests/unit/compat/test_<dep>.py``
that fails when the dependency changes the thing relied on. Upgrading a
dependency means running those tests and editing this folder, not the callers.

The modules import their dependency lazily, inside the functions: importing
``llmserve.compat.vllm`` must not import vLLM (the config loads without it, and
the ingress never loads it).
"""
