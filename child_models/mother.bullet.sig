{
 "manifest": {
  "created": "2026-12-03T09:23:15+00:00",
  "key_id": "f670be2f7d665147",
  "name": "mother",
  "sha256": "68fdf94668057a72ad100e40cee1e0142a36e0acb0b010b2e8fa656d01781991",
  "size": 1579426,
  "version": "0.2.0"
 },
 "signature": "9oZa95zYSIeW+lVlno1iMI1RX136JwSvmwKi32Ovw3aex9ChhmUbZH/1OkNT1hsjb78AYkuGMec6kCrR5fSgBg=="
}
