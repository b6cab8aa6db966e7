"""Prometheus metrics: what each process counts, and one scrape over every replica."""
