"""BoxLite tools for crewai (the tools arrive with the adapters issue; this package reserves the layout)."""

__all__: list[str] = []
