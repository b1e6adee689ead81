{
 "manifest": {
  "created": "2026-12-03T10:01:21+00:00",
  "key_id": "f670be2f7d665147",
  "name": "home",
  "sha256": "d1456ae30f2c41a05793380ae274d43d7836b141141e2c873467d39c9a1f99ac",
  "size": 995470,
  "version": "0.2.0"
 },
 "signature": "KhdQVH10SHTBpcdmCAv8v3VKvPUZlcG2otYQ+EgFydzR6OltZLKHqZ1k8G12VJ5kAh32UXmSPeuGqEkU0Ys0BQ=="
}
