"""The inference gateway: admission (tenancy, buckets, priority queue), batching, engines, metrics."""
