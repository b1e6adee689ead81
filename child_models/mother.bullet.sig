{
 "manifest": {
  "created": "2026-11-26T06:39:55+00:00",
  "key_id": "d75738e657a882c4",
  "name": "mother",
  "sha256": "6c9c6999e61b0628eff139de0aaf41a20a24337a01891149291e501912c0b19c",
  "size": 267158,
  "version": "0.1.0"
 },
 "signature": "2mLYnmntkuTmRfGF5BXrvK7dK0SmQtUx9eybw2ovwb3EZXYyPHy6T3TrZXUouaJKlsVyOGUFVOPFNYAYzYGbDQ=="
}
