{
 "manifest": {
  "created": "2026-12-03T17:05:38+00:00",
  "key_id": "f670be2f7d665147",
  "name": "mother",
  "sha256": "37b20ba436827215c487711bd4e6924ec0278196d15acec522abab4e8979e2af",
  "size": 4200098,
  "version": "0.4.0"
 },
 "signature": "HgLh6uF+SZGTw6Ig/VI77azz9BLVnQyEhnku9vgTLkiQXscTos12wlDzeewQk6uKXEPPVMep91+NYt6oNdpqBQ=="
}
