"""Fleet simulator: many real agents in one process against the emulator (docs/fleet.md)."""
