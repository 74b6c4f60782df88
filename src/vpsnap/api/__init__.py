"""The HTTP API: app factory, routes, schemas, auth, rate limits, problem+json."""
