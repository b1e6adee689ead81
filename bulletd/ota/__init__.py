"""Over-the-air child updates: the device-side OTA receiver, the pusher and their wire protocol.

    from bulletd.ota import OtaReceiver, OtaConfig
    receiver = OtaReceiver(OtaConfig(device="pi1", port=1883), TrustStore("keys/"),
                           models_dir="models", ota_dir="state/ota", install_hook=swap)
    await receiver.run()

Standalone (tests, bring-up): `python -m bulletd.ota receive --device pi1 --models DIR
--ota-dir DIR --trust KEYS`. The pusher is bulletd/ota/push.py (`bullet push`).
Protocol, reason codes and state machine: docs/OTA.md.
"""
from bulletd.ota.protocol import OtaError, REASONS, version_key
from bulletd.ota.receiver import OtaConfig, OtaReceiver
from bulletd.ota.staging import Ledger, recover

__all__ = ["OtaConfig", "OtaError", "OtaReceiver", "REASONS", "Ledger", "recover", "version_key"]
