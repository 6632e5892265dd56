"""dynbook_lib: the thin shared library of the dynbook executable book on neural-network training dynamics."""

__version__ = "0.1.0"
