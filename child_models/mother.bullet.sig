{
 "manifest": {
  "created": "2026-11-26T05:56:24+00:00",
  "key_id": "d75738e657a882c4",
  "name": "mother",
  "sha256": "307188feb0018d65d445f852c79977de12bf8cb5c461b166c7ce9b5ef5ca4200",
  "size": 267158,
  "version": "0.1.0"
 },
 "signature": "+dPb8X7P2GCrSP0//JSnEvTafgPFL41HsIm4TnCR1e5LihOZu8tXQuIWj+ufSnWfDprUegBZBiRyo8LxbwqLAw=="
}
