"""Primitives every layer may import and that import nothing of Patrol: config value types
(durations, sizes, paths), the retry rule, the log-once rule, secrets, URLs as logs show
them, and the bounded cache. Nothing here knows about readings, NCs or HTTP routes."""
