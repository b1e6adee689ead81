{
 "manifest": {
  "created": "2026-11-26T05:33:33+00:00",
  "key_id": "d75738e657a882c4",
  "name": "mother",
  "sha256": "624e6c3f7142e8f0cfce05941171582f0d081a2917935411cfaad22d19fe3a58",
  "size": 267158,
  "version": "0.1.0"
 },
 "signature": "lxLY3Uyi1KcHYEMTMieUfXXKq5bhjf1dFGGxrFFXIeCWmGtJn2wfBgGep36UM0SJFfEb8Z77ItvgGxTq5I7wAg=="
}
