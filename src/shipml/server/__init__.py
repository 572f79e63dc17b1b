"""The ASGI prediction service, built by ``create_app(settings)``."""
