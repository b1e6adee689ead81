{
 "manifest": {
  "created": "2026-12-03T13:53:47+00:00",
  "key_id": "f670be2f7d665147",
  "name": "calc",
  "sha256": "7394ec9ba34bd9f210ea29a712f34722f03f6d6b06b16b5e27aca294cbb399cf",
  "size": 991502,
  "version": "0.2.0"
 },
 "signature": "fBwPbKhZReLJMlxp2kCd5FX1rYaGoFSGFlREd6uKTl6na2n6jyIzTR2YIAmInebX3KAmWOxAGBk9yIQYGVC4Bg=="
}
