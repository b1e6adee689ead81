{
 "manifest": {
  "created": "2026-12-03T16:52:57+00:00",
  "key_id": "f670be2f7d665147",
  "name": "marathi",
  "sha256": "4ef0ed02335df30141a4be784b31c5a9b588123dd6a10579786c87493c4695aa",
  "size": 5683726,
  "version": "0.2.0"
 },
 "signature": "pC0w9jeH/LXoWk6SQjJUU3YS0wDnMEz0w4u81rNsAfHZwF4Z5lNB39ofAJJP8z/rBdvxa8obqlS/iGVnFTfuDA=="
}
