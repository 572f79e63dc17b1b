"""Peer servers for the side-by-side benchmark (never imported by shipml)."""
