"""qa: retrieval question answering over your documents, with verifiable citations."""

__version__ = "0.1.0"
