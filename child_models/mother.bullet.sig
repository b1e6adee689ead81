{
 "manifest": {
  "created": "2026-12-03T19:04:08+00:00",
  "key_id": "f670be2f7d665147",
  "name": "mother",
  "sha256": "ff1e1eb248972a6c82fa22173ef971a4225c012ae6a07313c8c8f0b41e1900d8",
  "size": 6298018,
  "version": "0.4.0"
 },
 "signature": "4fK6PI3tUAO9uyMbRTIizwaq/fEKsaVoVj6QBhOiAt2Iw2+jTjsTcSrsOkhQ15zX7gvd8CkrXgiJJOYLp6o0AA=="
}
