"""Remote management: the configuration layer the cloud may lay over the local file (managed.py
says which keys, bounds.py how far, layer.py applies, overlay.py persists), shared by the two
remote features in their own folders: shadow/ (named Device Shadow) and jobs/ (allowlisted IoT
Jobs). Both run on the agent's one MQTT connection (service_client.py). See README.md."""
