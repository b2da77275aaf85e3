"""The AWS Lambda handlers of the kit (``cloud/template.yaml``): ``ingest_handler.handler``,
``alarm_handler.handler``, ``silence_handler.handler``. They share the ingest core with the local
twin and take their AWS clients from ``aws.py``, so tests hand them moto-backed clients."""
