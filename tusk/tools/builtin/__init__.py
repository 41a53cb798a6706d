"""Built-in tool providers, registered in the `tusk.tools` entry-point group like any other."""
