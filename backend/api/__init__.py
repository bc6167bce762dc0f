"""The HTTP API (Starlette): app factory, routes per resource, one exception-handler map."""
