{
 "manifest": {
  "created": "2026-12-03T16:28:25+00:00",
  "key_id": "f670be2f7d665147",
  "name": "mother",
  "sha256": "b682f50c993f420c6816df6923fc3c298e7d740810adec5e81d12a276096e5d2",
  "size": 4200098,
  "version": "0.4.0"
 },
 "signature": "mSOaKodUL5f49Nt419C3/fD4ynszXE3bwWsHZQUCt0/jVTFsDCSjkDGWiZ9FkhkZB/6Nwy44LHRPqRXPDxJXDA=="
}
