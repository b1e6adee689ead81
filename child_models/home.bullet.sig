{
 "manifest": {
  "created": "2026-12-03T13:57:28+00:00",
  "key_id": "f670be2f7d665147",
  "name": "home",
  "sha256": "3834e2d69f58feee89f06aaac86809c1d296a8c5886f15fa258b01fce109e560",
  "size": 995342,
  "version": "0.2.0"
 },
 "signature": "MbKUfQCufwhyb2maQtofXKw66tl5d8by58P09IPkVJ6eZU+5hsg9ZNSVrDeSRZGcagk3aRq0xkqcGhwiTsqoCA=="
}
