"""The image-generation service: no Azure Functions types below function_app.py."""
