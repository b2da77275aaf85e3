"""Sensor drivers: a pure codec per sensor family plus a thin transport. Never imports agent/."""
