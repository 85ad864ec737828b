"""One reconciler per kind. Each reads the object and its children, decides with
pure builders and status helpers, applies the difference idempotently and writes
status only when it changed. They are level-based: whatever woke them up (the
object, a child, a referenced object, a timer, a restart), they converge to the
same result."""
