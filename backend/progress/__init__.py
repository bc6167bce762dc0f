"""Progress: the SSE fan-out of job events and the polling view."""
