{
 "manifest": {
  "created": "2026-12-03T19:31:38+00:00",
  "key_id": "f670be2f7d665147",
  "name": "fortunes",
  "sha256": "5b5c9233e31e42081394452494372dfad9d9cde3f9cdf1cb6714139c643cffd4",
  "size": 4629070,
  "version": "0.3.0"
 },
 "signature": "P0sJA/+ABL2vqCdM4UmPG88Q4x+4Mbo4vj0oLDyth8yAJvCPQg41bpA8uy4IVsNQbPUU68aYj79Izg0gziw9Bg=="
}
