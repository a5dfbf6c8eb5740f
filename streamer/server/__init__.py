"""The aiohttp service: app factory and routes."""
