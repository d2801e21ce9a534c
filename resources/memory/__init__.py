"""Searchable memory in LanceDB: the store's tables, recall, provenance, operational events and maintenance."""
