"""Schema additions of labelstack_batching, applied by Label Studio's own `migrate` when the app starts."""
