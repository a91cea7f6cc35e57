"""Day-2 operations on a running pipeline: what its dead-letter sinks hold, and putting it
back through the functions (``shardline dlq``)."""
