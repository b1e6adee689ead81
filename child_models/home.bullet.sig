{
 "manifest": {
  "created": "2026-12-03T09:46:38+00:00",
  "key_id": "f670be2f7d665147",
  "name": "home",
  "sha256": "c3454299a76fd89da45acad569aca2fd7f080d8a436dc45eab7757ae1f1b244a",
  "size": 995470,
  "version": "0.2.0"
 },
 "signature": "IRHrDGhF6YPFs+SiRq6TBLK+XElWYMEVyA6ZUe9Evj2pRMdQ+GsvX83mGJ+8kZdEk3qba/irlQnGctBIeJgWAg=="
}
