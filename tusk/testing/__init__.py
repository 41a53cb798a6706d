"""Support for testing and measuring Tusk with real parts: child processes and their environment
(and, later, local servers that speak the model providers' wire protocols)."""
