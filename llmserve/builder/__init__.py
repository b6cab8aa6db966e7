"""The app builder: one validated config -> one Ray Serve application (``app.py``)."""
