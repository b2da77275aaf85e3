"""Local alarm outputs: GPIO, Modbus RTU coil, command (agent/alarms/README.md)."""
