"""The model runtime: chat, embedding and rerank models from providers, behind one interface."""
