"""The RAG pipeline router: retrieval, reranking and prompting, then one shaper per API."""
