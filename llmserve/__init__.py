"""llmserve: OpenAI-compatible LLM and RAG serving on Ray Serve with vLLM engines.

The layout follows a request's way through the app: ``config`` (one YAML file)
-> ``builder`` (the Serve application) -> ``ingress`` (HTTP) -> ``servers``
(the deployments behind it) -> ``engine`` (vLLM). See docs/architecture.md.
"""
