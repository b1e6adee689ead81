{
 "manifest": {
  "created": "2026-12-03T14:01:50+00:00",
  "key_id": "f670be2f7d665147",
  "name": "mother",
  "sha256": "fef5114906b0318089d7bfcffaa38df0e57558c17966b295fd53ec92a9013f50",
  "size": 4200098,
  "version": "0.3.0"
 },
 "signature": "A4Vy45/uNdLwzm8M8brfCgsM0r7rG9NoC5/k+si4v9iyt+pyOS/wsKM0yC6ntXvrb/tDITY2oCDhaKYZLT6AAw=="
}
