{
 "manifest": {
  "created": "2026-12-03T13:26:45+00:00",
  "key_id": "f670be2f7d665147",
  "name": "mother",
  "sha256": "f2f6d1ed14ee23a3cfb1d37d164fa735c3f09849261e5a713317cae1c5ef4117",
  "size": 4200098,
  "version": "0.3.0"
 },
 "signature": "Ce3oBCHERJ2bA0c8Vo5Vtaj+lMHArLY1x++BVJb556o6T8Lhu5r3jOPwBdz28iqL74fwtDDaBQ2/waQhA8RaAw=="
}
