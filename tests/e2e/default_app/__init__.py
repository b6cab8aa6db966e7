"""Default-app tests: a package, so `llmserve run` (package scope) stops after them."""
