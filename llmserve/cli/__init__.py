"""The ``llmserve`` command line (see ``main.py``)."""

from llmserve.cli.main import main

__all__ = ["main"]
