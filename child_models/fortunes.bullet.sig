{
 "manifest": {
  "created": "2026-11-26T05:56:22+00:00",
  "key_id": "d75738e657a882c4",
  "name": "fortunes",
  "sha256": "84e5815b150db90f287fefef206b4baf9576c9d3a29aa6add2966d1c0a2081d0",
  "size": 720974,
  "version": "0.1.0"
 },
 "signature": "fLP5+G8+B6+ViMBGZFc+3Uq9XbeSD8GEY8mS54BrB5ouqfqMrl3K6yUdLMMwZ/bTvfAzHmp3f0QEM5hmw0R7DQ=="
}
