"""Formatters: turn typed results into tables or JSON-ready dicts. They never compute."""
