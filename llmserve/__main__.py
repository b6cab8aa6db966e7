"""``python -m llmserve``: the same as the ``llmserve`` command."""

import sys

from llmserve.cli import main

sys.exit(main())
