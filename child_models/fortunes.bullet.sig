{
 "manifest": {
  "created": "2026-11-26T06:39:54+00:00",
  "key_id": "d75738e657a882c4",
  "name": "fortunes",
  "sha256": "76df4a9b6bd5c9ab5ce02138f3832f185a3d77b298ac055f96c10f11553fbbf9",
  "size": 720974,
  "version": "0.1.0"
 },
 "signature": "jYdtKqdESH/iruUqgChg+tX4pL+bQ5bBdTG/kqlibyzfCyNtr5R/Ou0hFIDtO9XqJ2yTCfIa36J2B7SdXW6xAg=="
}
