"""vLLM engines: engine arguments from config, and the OpenAI serving layer on top."""
