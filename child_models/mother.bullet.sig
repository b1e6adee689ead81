{
 "manifest": {
  "created": "2026-12-03T13:43:36+00:00",
  "key_id": "f670be2f7d665147",
  "name": "mother",
  "sha256": "706bc133ed08bf05b5b89c675b3e9e6b7a6353fadfe0a80f550a943d8c32e11f",
  "size": 4200098,
  "version": "0.3.0"
 },
 "signature": "7FEQgHSbfUb9neZOp2LUrOYm9+iaSwxxSXG8zrLS8dbK7xixLlNfhBLYaJXtBZiMUX00cNRSxdXQhUcLN284BA=="
}
