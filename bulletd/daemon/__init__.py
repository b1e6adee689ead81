"""bulletd.daemon: the bulletd service — config, registry, scheduler, MQTT and Unix-socket
transports, lifecycle. Run it with `bulletd [--config FILE]` or `python -m bulletd.daemon`.
"""
