"""The Serve deployments behind the ingress: LLM, embedding, reranking, retrieval, RAG."""
