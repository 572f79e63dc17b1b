from tests.integration.postgres import postgres_uri

__all__ = ["postgres_uri"]
