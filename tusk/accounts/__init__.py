"""Accounts, workspaces and memberships, console tokens and API keys."""
