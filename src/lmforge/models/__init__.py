"""Resolving model names to local folders and building task models (full or peft-wrapped)."""
