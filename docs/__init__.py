"""The project's documentation, and the generator of its tables (:mod:`docs.generate`)."""
