"""OpenAI wire format: error shape and the few wire models vLLM lacks."""
