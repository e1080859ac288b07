"""Redis storage: key schema, Lua scripts, the repository and the embedded store."""
