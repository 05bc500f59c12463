"""The scoring kernel: Arrow record batches in, Arrow record batches out."""
