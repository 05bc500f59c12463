"""The credit-risk feature contract and its synthetic generator."""
