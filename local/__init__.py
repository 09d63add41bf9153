"""Stand-ins for the cloud on a laptop (Azurite, the images API simulator). Never deployed."""
