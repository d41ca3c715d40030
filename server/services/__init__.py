"""Plain services: the work behind the routers, with no knowledge of HTTP beyond ApiError."""
