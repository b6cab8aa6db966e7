"""Fault tests: a package, so the app its conftest starts (package scope) stops after them."""
