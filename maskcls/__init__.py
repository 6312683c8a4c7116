"""maskcls: mask / gender / age classification for the P Stage 1 competition layout."""
__version__ = "0.1.0"
