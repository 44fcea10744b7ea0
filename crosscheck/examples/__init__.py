"""Worked examples of cross-check backends (specs/writing-a-backend.md)."""
