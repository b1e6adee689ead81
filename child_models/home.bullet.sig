{
 "manifest": {
  "created": "2026-12-03T16:54:27+00:00",
  "key_id": "f670be2f7d665147",
  "name": "home",
  "sha256": "e29cc70ed74d952e2b258ef669dee338084230f953200b7a2670bc9a5d1ce728",
  "size": 995214,
  "version": "0.2.0"
 },
 "signature": "5wHuRBa/zig8ClBJJ12RO6rXnvSCOqM6I0DKoXt1T16TvZdAKGwjgyhprq4JQSHHyw0Cz8iChhs/7CvMGPRDCg=="
}
