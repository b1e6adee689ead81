{
 "manifest": {
  "created": "2026-12-03T10:00:26+00:00",
  "key_id": "f670be2f7d665147",
  "name": "calc",
  "sha256": "1b55a7c092cdbd8185de69ffdf8b039e5f64f023dab26cdec1aec5271db6de23",
  "size": 991374,
  "version": "0.2.0"
 },
 "signature": "otDTCd3AUg9uf/Gyle8o9pXKb4WWO0qXicrAQ8e3Ayb5l2Uf4f2cjIcB1HjAKclF/iceBhP/TX8/NxOf0Kj0BQ=="
}
