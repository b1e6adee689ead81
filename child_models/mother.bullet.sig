{
 "manifest": {
  "created": "2026-12-03T18:58:49+00:00",
  "key_id": "f670be2f7d665147",
  "name": "mother",
  "sha256": "b8252551a5db930e0945cab998de762c2c4135736be610b4fd8c421c0728bf64",
  "size": 6298018,
  "version": "0.4.0"
 },
 "signature": "x3XQxIlTnUkCf4OACmybhVFLShxOA9LZJ/WtKBtyTpcLPKhm+5PCT595Re1Vh7Zg5Gijo6Gp1njmbIuN/Dc0BA=="
}
