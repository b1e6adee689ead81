{
 "manifest": {
  "created": "2026-11-26T05:56:16+00:00",
  "key_id": "d75738e657a882c4",
  "name": "marathi",
  "sha256": "79d433dc0b7b5d3092d8cb69513470b1602e11e5c8dcefaf002041aa20d36943",
  "size": 724302,
  "version": "0.1.0"
 },
 "signature": "vEgmBP62raqfRDxv6v3NIjtsBaWfQKc06l/y71Dt81emDbw8XkEIe4kG2G5ptobZUZvUNf5PONyuFKS6GLihBA=="
}
