"""Built-in real samples for ``medsat-sr demo`` (see SOURCES.md)."""
