{
 "manifest": {
  "created": "2026-12-03T16:42:02+00:00",
  "key_id": "f670be2f7d665147",
  "name": "mother",
  "sha256": "e1e2a40f5f216de4746d1aa1c3f24dabcd1a12af9aa11b6a05a756c87732c4d6",
  "size": 4200098,
  "version": "0.4.0"
 },
 "signature": "wQyVgC+qWi/eEDQwV57gRs0Me8gji4/vkVAfWVY1etPOsl2qV7mSPzQ4GdRuGFx8ck95Jjb+JvhNKslVQST4AA=="
}
