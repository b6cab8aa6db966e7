"""Every use of a dependency's private or unstable API, in one place, each with a
canary test in ``tests/unit/compat/``."""
