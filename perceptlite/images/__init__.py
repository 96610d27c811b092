"""Images in: find image files (discover), decode them to upright RGB (decode) within a memory budget (memory)."""
