"""IoT Core data-plane services of the emulator (Device Shadow, Jobs, …): pure logic over a
SQLite store, driven by ``runner`` which bridges them to the broker."""
