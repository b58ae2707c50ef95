"""Command-line layer: one module per script (argument parsing and one call into the library)."""
