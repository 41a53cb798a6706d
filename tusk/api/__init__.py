"""The HTTP edge: Service API (`/v1`), Console API (`/console/api`), health and the home page."""
