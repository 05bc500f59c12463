"""Use cases as data: a deployment (feature table, contract, model, output kind) read from YAML."""
