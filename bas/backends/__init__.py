"""Device backends, one file per URL scheme (dram://, file://, pmem://), found through
bas.registry and imported only when their scheme is opened."""
