"""The RAG engine: extract, clean, split, embed, index and retrieve."""
