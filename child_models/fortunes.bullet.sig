{
 "manifest": {
  "created": "2026-11-26T05:33:23+00:00",
  "key_id": "d75738e657a882c4",
  "name": "fortunes",
  "sha256": "8c205abe957fda5bf29517610ce6a4f3b2641b9834428b3a5d9d612e4d9b8e29",
  "size": 720974,
  "version": "0.1.0"
 },
 "signature": "JaBb/fUbhjZu2oF3RKzTcwW2CNMMCL8vXiEbwIwHvUdIyFyIB43B97U6CefX75SHI3N0JWCOEru732smfyQsDQ=="
}
