"""Built-in providers; each is registered in the entry-point group `tusk.providers`."""
