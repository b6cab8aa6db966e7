"""Ray Serve deployments: ingress, LLM servers, and the RAG pipeline stages."""
