"""PDE data: the data-set registry (readers, generators and shards build on it)."""
