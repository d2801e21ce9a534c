"""Permanent archive: content-addressed msgpack packs, their index, restore and GC."""
