"""Input checks and conversions, the loops' shards and their placement on workers."""
