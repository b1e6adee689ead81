{
 "manifest": {
  "created": "2026-12-03T09:56:57+00:00",
  "key_id": "f670be2f7d665147",
  "name": "marathi",
  "sha256": "97c225337d91d8d9a137b183a1193a6a96aaf344600f363871dd160e79d39e4e",
  "size": 5683726,
  "version": "0.2.0"
 },
 "signature": "xlIZOzj+1kIVWKvJ666/EC/71pTSSuv3gr7GHs0lVIXrACkKlHsio2OASAaYBadpJUjPjRv10jTM24baibOZAQ=="
}
