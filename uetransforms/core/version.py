"""The package version: its one home (``pyproject.toml`` reads it, ``ue.__version__`` re-exports it).

Written into every bank's metadata, every card and every protected PNG's marker, so a published
file says which uetransforms made it.
"""

__version__ = "0.1.0"
