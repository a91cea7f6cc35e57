"""Running pipelines here: the embedded local AWS (moto, osmem), the local event source mapping
driver, ``dev`` and ``demo``, ``invoke`` on one event, and reading back what the sinks wrote."""
