"""What every HTTP source shares: body reading, JSON replies, the one mapping from an error
to a reply, key checks, static assets, health and metrics endpoints, and the server."""
