"""Renderers from a verdict to JSON, Markdown, HTML and JUnit."""
