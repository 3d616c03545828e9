"""Presentation: Textual app and widgets, rich reports, Perfetto export."""
