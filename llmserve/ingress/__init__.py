"""The OpenAI-compatible HTTP ingress and the machinery around each request it relays."""
