"""Who a request comes from, and how much of the shared capacity each client may hold (issue 21)."""
