"""``llmserve eval``: a pipeline measured through the OpenAI API of a running server.

``questions`` reads an eval set, ``client`` asks one question as any OpenAI
client would (streamed, through the ``openai`` SDK), ``scoring`` scores the
replies and sums them up per retrieval mode and query mode. Nothing here
imports the engine or the server: it works against any llmserve URL.
"""
