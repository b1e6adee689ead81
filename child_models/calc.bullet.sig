{
 "manifest": {
  "created": "2026-12-03T09:46:33+00:00",
  "key_id": "f670be2f7d665147",
  "name": "calc",
  "sha256": "8c332cb1408f804631d507336b85152fa7e88e972e24765e23626e5d98e030a1",
  "size": 991374,
  "version": "0.2.0"
 },
 "signature": "2CtKJJWh3V1F6Q4TcIJxlTBVwBHHNjFqcoPCNGOG2W6vsMbbZeuFFnjC0uFDwK0h96ZRAGa2g+EQzIB92WdBDg=="
}
