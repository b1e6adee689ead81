{
 "manifest": {
  "created": "2026-12-03T16:58:35+00:00",
  "key_id": "f670be2f7d665147",
  "name": "calc",
  "sha256": "882d9e1634fb883054b3663a078510ca13877404755fe7cca4e8a8f28120a348",
  "size": 991374,
  "version": "0.2.0"
 },
 "signature": "w3J8/nXrGZlYHIRcrWJfR8IOk1bbwWfPcg1U991knFlnZbTN5XfXZ5lKwStFcGNwwGktaoU4A2BdtXz3NU5RAQ=="
}
