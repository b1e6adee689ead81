{
 "manifest": {
  "created": "2026-12-03T17:01:27+00:00",
  "key_id": "f670be2f7d665147",
  "name": "home",
  "sha256": "e30e04bfee545b9d21a612a5a86a0be67c732d069bd74076cedfab8ea9cd61a2",
  "size": 995214,
  "version": "0.2.0"
 },
 "signature": "ChASzjycG7kid8/zI88Rf7dQmumIO798/NpZPnHzvUQL4Jaz2MrQ3rVsM8FpCP2N91Mke/bFWoJE4GSYVYYJAw=="
}
