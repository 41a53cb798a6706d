"""Apps: what users build and publish (chat, completion, agent-chat, advanced-chat, workflow)."""
