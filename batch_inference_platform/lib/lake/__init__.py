"""Delta Lake tables: transactional partition replace, streaming reads, the dataset catalog."""
