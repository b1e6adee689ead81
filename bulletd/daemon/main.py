"""`bulletd`: run the daemon in the foreground (systemd Type=notify ready).

    bulletd                                   # zero-config: socket + children in the model dir
    bulletd --config /etc/bulletd/bulletd.yaml
    bulletd --models child_models --trust child_models/keys --mqtt 127.0.0.1:1883
    bulletd --check-config --config FILE      # validate and print the effective config, exit

Flags override the matching config keys; see docs/DAEMON.md for every key and its default.
"""
from __future__ import annotations

import argparse
import json
import sys

from bulletd import __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bulletd", description="Bullet OS daemon: serves tiny children over a "
                                "Unix socket and MQTT.")
    p.add_argument("--config", "-c", metavar="FILE", help="YAML config file (default: built-in defaults)")
    p.add_argument("--models", metavar="DIR", help="model directory (config: model_dir)")
    p.add_argument("--socket", metavar="PATH", help="control socket path (config: socket.path)")
    p.add_argument("--trust", metavar="PATH", action="append",
                   help="trusted public key file or folder; repeatable (config: trust.keys)")
    p.add_argument("--allow-unsigned", action="store_true", help="load unsigned children (development only)")
    p.add_argument("--mqtt", metavar="HOST[:PORT]", help="MQTT broker (config: mqtt.host, mqtt.port)")
    p.add_argument("--device", metavar="ID", help="device id in topics (config: device_id)")
    p.add_argument("--fleet", metavar="GROUP", help="join the fleet shared subscription GROUP")
    p.add_argument("--fallback", metavar="CHILD", help="child used when the mother is unsure (config: router.fallback)")
    p.add_argument("--home", metavar="FILE", help="home file for the home agent (config: tools.home.file)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument("--check-config", action="store_true", help="print the effective config as JSON and exit")
    p.add_argument("--version", action="version", version=f"bulletd {__version__}")
    return p


def overrides_from_args(a: argparse.Namespace) -> dict:
    o: dict = {}
    if a.models:
        o["model_dir"] = a.models
    if a.socket:
        o["socket.path"] = a.socket
    if a.trust:
        o["trust.keys"] = tuple(a.trust)
    if a.allow_unsigned:
        o["trust.allow_unsigned"] = True
    if a.mqtt:
        host, _, port = a.mqtt.rpartition(":") if ":" in a.mqtt else (a.mqtt, "", "")
        o["mqtt.host"] = host
        if port:
            if not port.isdigit():
                raise SystemExit(f"bulletd: --mqtt {a.mqtt!r}: expected HOST[:PORT] with a numeric port")
            o["mqtt.port"] = int(port)
    if a.device:
        o["device_id"] = a.device
    if a.fleet:
        o["mqtt.fleet.enabled"] = True
        o["mqtt.fleet.group"] = a.fleet
    if a.fallback:
        o["router.fallback"] = a.fallback
    if a.home:
        o["tools.home.file"] = a.home
    if a.log_level:
        o["log_level"] = a.log_level
    return o


def main(argv: list[str] | None = None) -> int:
    from bulletd.daemon.config import ConfigError, as_dict, load_config, override
    a = build_parser().parse_args(argv)
    try:
        cfg = load_config(a.config)
        ov = overrides_from_args(a)
        if ov:
            cfg = override(cfg, **ov)
    except ConfigError as exc:
        print(f"bulletd: {exc}", file=sys.stderr)
        return 2
    if a.check_config:
        d = as_dict(cfg)
        d["resolved"] = {"device": cfg.device, "model_dir": str(cfg.models), "socket": cfg.socket_path,
                         "workers": cfg.workers, "max_queue": cfg.max_queue, "mqtt_client_id": cfg.mqtt_client_id}
        print(json.dumps(d, indent=2, default=str))
        return 0
    if cfg.model_dir and not cfg.models.is_dir():
        # an explicit model dir that is missing is a mistake (a typo, an unmounted disk): say so
        what = "is not a directory" if cfg.models.exists() else "does not exist"
        print(f"bulletd: model_dir {cfg.models} {what} (from {'--models' if a.models else 'model_dir in the config'}); "
              "expected a folder of NAME.bullet children", file=sys.stderr)
        return 2
    from bulletd.daemon.service import run_daemon
    return run_daemon(cfg, a.config, ov)


if __name__ == "__main__":
    raise SystemExit(main())
