"""Read models built from events: tables, pure apply functions and the projector runtime."""
