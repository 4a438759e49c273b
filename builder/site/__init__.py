"""Render atlas data into a static site, and preview it."""
