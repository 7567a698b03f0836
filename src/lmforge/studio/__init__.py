"""lmforge studio: a web page over runs, the registry and the playground (see app.py)."""
