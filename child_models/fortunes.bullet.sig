{
 "manifest": {
  "created": "2026-12-03T09:35:44+00:00",
  "key_id": "f670be2f7d665147",
  "name": "fortunes",
  "sha256": "c39271e274e6f0ef2175cff713044014c67bbba693926d03d811318c475d33a6",
  "size": 720974,
  "version": "0.2.0"
 },
 "signature": "9vFu9WTHwPwwNbtC00QTTgM2ON1WDMV9Y0t5z5bYVmkirvZu42pd1jtTTJhaYW3AinNw3FMP0ZLW1o/5YBmsAg=="
}
