"""The upstream RyzeAPI: REST config ensure, WebSocket sources, the request budget."""
