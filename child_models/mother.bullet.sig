{
 "manifest": {
  "created": "2026-12-03T18:49:35+00:00",
  "key_id": "f670be2f7d665147",
  "name": "mother",
  "sha256": "3b48780492e830d070f86d1ea0c3f3b4669b236d1570573376f6bb98dfdf43a7",
  "size": 6298018,
  "version": "0.4.0"
 },
 "signature": "kjDihlS9HwEMLIVwa3kxjHtfASMS1Hx6u1OT+rjCFXhXz7p/GwgNRUzZnMLBBm1+apXp5IIZ9AuuhgxI8AMHBw=="
}
