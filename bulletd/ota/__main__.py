"""Run the OTA receiver on its own (without the daemon): bring-up, tests and benchmarks.

    python -m bulletd.ota receive --device pi1 --port 1883 --models ./models
                                  --ota-dir ./state/ota --trust ./keys [--groups lab,kitchen]
    python -m bulletd.ota recover --models ./models --ota-dir ./state/ota   # crash recovery only
    python -m bulletd.ota status --ota-dir ./state/ota                      # the ledger as JSON

`receive` prints "READY" on stdout once connected to the broker; SIGTERM stops it cleanly (the
retained presence is set offline). No hot swap happens here: inside bulletd the daemon does
that through install_hook (bulletd/ota/daemon_glue.py). Protocol: docs/OTA.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from bulletd.errors import BulletError

log = logging.getLogger("bulletd.ota")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bulletd.ota", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("receive", help="run a standalone OTA receiver")
    r.add_argument("--device", required=True)
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=1883)
    r.add_argument("--prefix", default="bullet")
    r.add_argument("--groups", default="", help="comma-separated fleet groups")
    r.add_argument("--models", required=True, help="directory of live children")
    r.add_argument("--ota-dir", required=True, help="the receiver's state directory")
    r.add_argument("--trust", required=True, help="PEM public key file or directory of them")
    r.add_argument("--no-smoke", action="store_true", help="skip the smoke test")
    r.add_argument("--chunk-timeout", type=float, default=2.0)
    r.add_argument("--stall-timeout", type=float, default=60.0)
    r.add_argument("--window", type=int, default=8)
    r.add_argument("--min-free", type=int, default=1 << 20)
    r.add_argument("-v", "--verbose", action="store_true")
    c = sub.add_parser("recover", help="finish an interrupted install and clean the staging "
                                       "area (what the receiver does at start), then exit")
    c.add_argument("--models", required=True)
    c.add_argument("--ota-dir", required=True)
    s = sub.add_parser("status", help="print the ledger (installed versions, last pushes)")
    s.add_argument("--ota-dir", required=True)
    return ap


async def _receive(args) -> int:
    from bulletd.ota import OtaConfig, OtaReceiver
    from bulletd.signing import TrustStore

    cfg = OtaConfig(device=args.device, host=args.host, port=args.port, prefix=args.prefix,
                    groups=tuple(g for g in args.groups.split(",") if g),
                    chunk_timeout=args.chunk_timeout, stall_timeout=args.stall_timeout,
                    window=args.window, min_free_bytes=args.min_free,
                    smoke_test=not args.no_smoke)
    rx = OtaReceiver(cfg, TrustStore(args.trust), args.models, args.ota_dir)
    for line in rx.recovered:
        print(f"recovered: {line}", flush=True)
    task = asyncio.create_task(rx.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.wait([asyncio.create_task(rx.connected.wait()), asyncio.create_task(stop.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    if not stop.is_set():
        print("READY", flush=True)
    await stop.wait()
    from bulletd.tasks import cancel_and_wait
    if await cancel_and_wait([task], what="OTA receiver"):
        return 1
    if not task.cancelled() and task.exception() is not None:
        log.error("OTA receiver failed: %r", task.exception())
        return 2
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        if args.cmd == "receive":
            return asyncio.run(_receive(args))
        if args.cmd == "recover":
            from pathlib import Path
            from bulletd.ota import Ledger, recover
            ota_dir = Path(args.ota_dir)
            ota_dir.mkdir(parents=True, exist_ok=True)
            for line in recover(ota_dir, Path(args.models), Ledger(ota_dir / "ledger.json")):
                print(line)
            return 0
        if args.cmd == "status":
            from pathlib import Path
            from bulletd.ota import Ledger
            print(json.dumps(Ledger(Path(args.ota_dir) / "ledger.json").data, indent=1))
            return 0
    except (BulletError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
