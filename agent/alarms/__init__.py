"""Methane alarms and leak events at the edge (agent/alarms/README.md): the alarm state machine per
sensor quantity, alarm events, local outputs and leak events."""
