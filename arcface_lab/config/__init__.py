"""The config wing: params dataclasses and their field parsers (never the registry or engines)."""
